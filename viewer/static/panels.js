// Cortextual brain and mouse panels. The brain is a WebGL cortex drawn with three.js (vendored,
// static/vendor/three.min.js, loaded before this script); the mouse area map is a 2-D canvas. Both
// share the colour controls (ColourScale). Injected once per page through gr.HTML(head=...); each
// panel calls CortextualPanels.mountX from its js_on_load with its own `element`, so several panels
// coexist without global element ids. The payload formats are written by viewer/brain_panel.py and
// viewer/mouse_panel.py.
(function () {
  if (window.CortextualPanels) return;
  var STATIC = "static_data";

  // ------------------------------------------------------------------ decoding

  function b64bytes(s) {
    var bin = atob(s);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  async function inflate(s) {
    var stream = new Blob([b64bytes(s)]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  var HALF = null;
  function halfTable() {
    if (HALF) return HALF;
    HALF = new Float32Array(65536);
    for (var h = 0; h < 65536; h++) {
      var s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      HALF[h] = e === 0 ? s * f * Math.pow(2, -24)
        : e === 31 ? (f ? NaN : s * Infinity)
        : s * (1 + f / 1024) * Math.pow(2, e - 15);
    }
    return HALF;
  }

  function typed(bytes, dtype) {
    var buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    switch (dtype) {
      case "u1": return new Uint8Array(buf);
      case "u2": return new Uint16Array(buf);
      case "u4": return new Uint32Array(buf);
      case "i2": return new Int16Array(buf);
      case "i4": return new Int32Array(buf);
      case "f4": return new Float32Array(buf);
      case "f2": {
        var t = halfTable(), u = new Uint16Array(buf), out = new Float32Array(u.length);
        for (var i = 0; i < u.length; i++) out[i] = t[u[i]];
        return out;
      }
    }
    throw new Error("unknown dtype " + dtype);
  }

  async function unz(s, dtype) { return typed(await inflate(s), dtype); }
  function values16(s) { return typed(b64bytes(s), "f2"); }

  // ------------------------------------------------------------------ drawing helpers

  function fmt(v) {
    if (!isFinite(v)) return String(v);
    var a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1e4 || a < 1e-3) return v.toExponential(2);
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    if (a >= 1) return v.toFixed(2);
    return v.toPrecision(2);
  }

  function placeTip(tip, stage, ev, html) {
    if (!html) { tip.hidden = true; return; }
    tip.innerHTML = html;
    tip.hidden = false;
    var r = stage.getBoundingClientRect();
    var x = ev.clientX - r.left, y = ev.clientY - r.top;
    var w = tip.offsetWidth, h = tip.offsetHeight;
    tip.style.left = (x + 14 + w > r.width ? Math.max(0, x - 14 - w) : x + 14) + "px";
    tip.style.top = (y + 14 + h > r.height ? Math.max(0, y - 10 - h) : y + 14) + "px";
  }

  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; });
  }

  function canvasPoint(canvas, ev) {
    var r = canvas.getBoundingClientRect();
    return [(ev.clientX - r.left) * canvas.width / r.width, (ev.clientY - r.top) * canvas.height / r.height];
  }

  // ------------------------------------------------------------------ colour scale (shared)
  // The user's colour controls: colormap, symmetric/sequential, vmin/vmax, threshold, lock. All
  // client-side: a change repaints without asking the server. `onChange` repaints the panel.

  function ColourScale(root, onChange) {
    var q = function (c) { return root.querySelector(c); };
    var el = { cmap: q(".ctx-cmap"), scale: q(".ctx-scale"), vmin: q(".ctx-vmin"), vmax: q(".ctx-vmax"),
      thr: q(".ctx-thr"), lock: q(".ctx-lock"), bar: q(".ctx-cbar"), title: q(".ctx-title") };
    var st = { luts: {}, lutCache: {}, hint: "symmetric", meta: null, vmin: -1, vmax: 1, thr: null, units: "" };
    var self = this;

    this.setLuts = function (luts) {
      if (!luts) return;
      st.luts = luts; st.lutCache = {};
      var keep = el.cmap.value;
      el.cmap.innerHTML = "<option value=\"auto\">auto</option>" + Object.keys(luts).map(function (n) {
        return "<option value=\"" + esc(n) + "\">" + esc(n) + "</option>";
      }).join("");
      el.cmap.value = luts[keep] ? keep : "auto";
    };
    this.scale = function () { return el.scale.value === "auto" ? st.hint : el.scale.value; };
    this.cmapName = function () {
      if (el.cmap.value !== "auto" && st.luts[el.cmap.value]) return el.cmap.value;
      return self.scale() === "symmetric" ? "RdBu_r" : "viridis";
    };
    this.lut = function () {
      var n = self.cmapName();
      if (!st.lutCache[n]) st.lutCache[n] = st.luts[n] ? b64bytes(st.luts[n]) : new Uint8Array(768).fill(128);
      return st.lutCache[n];
    };
    this.locked = function () { return el.lock.checked; };
    this.limits = function () { return { vmin: st.vmin, vmax: st.vmax, thr: st.thr, symmetric: self.scale() === "symmetric" }; };
    this.units = function () { return st.units; };
    this.settings = function () {
      return { cmap: self.cmapName(), scale: self.scale(), vmin: st.vmin, vmax: st.vmax, threshold: st.thr, units: st.units,
        title: st.meta ? st.meta.title || "" : "" };
    };

    // Limits the values suggest for the scale in use (the payload carries them for its own hint).
    function suggested() {
      var m = st.meta;
      if (!m) return [st.vmin, st.vmax];
      var lo = m.vmin, hi = m.vmax;
      if (lo === undefined || lo === null) lo = -hi;  // older payloads: symmetric vmax only
      var L = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
      if (self.scale() === "symmetric") return [-L, L];
      return m.scale === "sequential" ? [lo, hi] : [0, L];
    }
    function showInputs() {
      el.vmin.value = fmtInput(st.vmin); el.vmax.value = fmtInput(st.vmax);
    }
    function readThreshold() {
      var t = parseFloat(el.thr.value);
      st.thr = isFinite(t) && t > 0 ? t : null;
    }

    // New values arrived (a stimulus switch): take their limits unless the scale is locked.
    this.onValues = function (meta) {
      st.meta = meta;
      st.hint = meta.scale || "symmetric";
      st.units = meta.cbar_label || "";
      if (!self.locked()) {
        var lim = suggested(); st.vmin = lim[0]; st.vmax = lim[1];
        if (meta.threshold && !el.thr.value) el.thr.value = fmtInput(meta.threshold);
        showInputs();
      }
      readThreshold();
      if (el.title) el.title.textContent = meta.title || "";
    };
    this.clear = function (message) {
      st.meta = null;
      if (el.title) el.title.textContent = message || "";
      self.drawBar(false);
    };

    el.scale.addEventListener("change", function () {
      if (!self.locked()) { var lim = suggested(); st.vmin = lim[0]; st.vmax = lim[1]; showInputs(); }
      onChange();
    });
    el.cmap.addEventListener("change", onChange);
    function limitInput(which) {
      return function () {
        var x = parseFloat(el[which].value);
        if (!isFinite(x)) return;
        st[which] = x;
        // Symmetric: one number sets both ends, so 0 stays in the middle of the map.
        if (self.scale() === "symmetric") { st.vmin = -Math.abs(x); st.vmax = Math.abs(x); showInputs(); }
        onChange();
      };
    }
    el.vmin.addEventListener("change", limitInput("vmin"));
    el.vmax.addEventListener("change", limitInput("vmax"));
    el.thr.addEventListener("change", function () { readThreshold(); onChange(); });
    el.lock.addEventListener("change", function () {
      root.dataset.locked = self.locked() ? "1" : "0";
      if (!self.locked() && st.meta) { var lim = suggested(); st.vmin = lim[0]; st.vmax = lim[1]; showInputs(); onChange(); }
    });

    // The colour bar: the map from vmin to vmax, ticks, the threshold band greyed, units.
    this.drawBar = function (show) {
      var c = el.bar;
      if (!c) return;
      var cssW = Math.max(160, Math.min(420, c.getBoundingClientRect().width || 360)), dpr = Math.min(2, window.devicePixelRatio || 1);
      var W = Math.round(cssW * dpr), H = Math.round(44 * dpr);
      if (c.width !== W || c.height !== H) { c.width = W; c.height = H; }
      var ctx = c.getContext("2d");
      ctx.clearRect(0, 0, W, H);
      if (!show) return;
      var lut = self.lut(), x0 = 8 * dpr, x1 = W - 8 * dpr, y0 = 4 * dpr, h = 12 * dpr, w = x1 - x0;
      var lo = st.vmin, hi = st.vmax, thr = st.thr, sym = self.scale() === "symmetric";
      for (var i = 0; i < Math.round(w); i++) {
        var t = i / Math.max(1, Math.round(w) - 1), k = Math.min(255, Math.floor(t * 255.999)), v = lo + t * (hi - lo);
        var hidden = thr !== null && (sym ? Math.abs(v) < thr : v < thr);
        ctx.fillStyle = hidden ? "#d4d4d4" : "rgb(" + lut[3 * k] + "," + lut[3 * k + 1] + "," + lut[3 * k + 2] + ")";
        ctx.fillRect(x0 + i, y0, 1.5, h);
      }
      ctx.strokeStyle = "#555"; ctx.lineWidth = 1; ctx.strokeRect(x0 + 0.5, y0 + 0.5, w - 1, h - 1);
      ctx.fillStyle = "#222"; ctx.font = Math.round(11 * dpr) + "px sans-serif"; ctx.textBaseline = "top";
      var ticks = [[0, lo], [1, hi]];
      if (lo < 0 && hi > 0) ticks.push([(0 - lo) / (hi - lo), 0]);
      ticks.forEach(function (tk) {
        var x = x0 + tk[0] * w;
        ctx.beginPath(); ctx.moveTo(x, y0 + h); ctx.lineTo(x, y0 + h + 3 * dpr); ctx.stroke();
        ctx.textAlign = tk[0] < 0.02 ? "left" : tk[0] > 0.98 ? "right" : "center";
        ctx.fillText(fmt(tk[1]).replace(/^-/, "\u2212"), x, y0 + h + 4 * dpr);
      });
      if (st.units) { ctx.textAlign = "center"; ctx.fillStyle = "#444"; ctx.fillText(st.units, x0 + w / 2, y0 + h + 16 * dpr); }
      root.dataset.vmin = String(lo); root.dataset.vmax = String(hi);
      root.dataset.scale = self.scale(); root.dataset.cmap = self.cmapName();
    };
  }

  function fmtInput(v) { return isFinite(v) ? String(+v.toPrecision(4)) : ""; }

  // After a repaint with new values: the counters part B's bench and the browser tests read.
  function markPaint(element, root, title) {
    // root: the panel's own div; the Gradio block around it carries the panel's elem_id.
    [root, element.parentElement && element.parentElement.closest(".block") || element].forEach(function (n) {
      n.dataset.paints = String((+n.dataset.paints || 0) + 1);
      n.dataset.title = title || "";
    });
  }

  // ------------------------------------------------------------------ brain (WebGL cortex) panel
  // three.js: both hemispheres on one canvas. Each hemisphere is a node whose matrix a preset view
  // sets (lateral and medial turn each hemisphere to face the viewer, side by side); the user's
  // drag rotates, the wheel zooms and a right- or shift-drag pans the whole scene. Values are a
  // vertex attribute; colour map, limits and threshold are shader uniforms, so a colour change
  // is one draw and a stimulus switch one attribute upload.

  var VERT = [
    "attribute float value; attribute float sulc; attribute float has;",
    "varying float vValue; varying float vSulc; varying float vHas; varying vec3 vN;",
    "void main() {",
    "  vValue = value; vSulc = sulc; vHas = has; vN = normalize(normalMatrix * normal);",
    "  gl_Position = projectionMatrix * modelViewMatrix * vec4(position, 1.0);",
    "}"].join("\n");
  var FRAG = [
    "uniform sampler2D lut; uniform float vmin; uniform float vmax; uniform float thr; uniform float symm; uniform float showData;",
    "varying float vValue; varying float vSulc; varying float vHas; varying vec3 vN;",
    "void main() {",
    "  float shade = abs(normalize(vN).z);",  // a head light: surfaces facing the viewer are brightest
    "  vec3 col = vec3(vSulc * (0.62 + 0.38 * shade));",
    "  if (showData > 0.5 && vHas >= 0.5) {",
    "    float x = vValue;",
    "    bool shown = thr < 0.0 || (symm > 0.5 ? abs(x) >= thr : x >= thr);",
    "    if (shown) {",
    "      float t = clamp((x - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0);",
    "      vec3 c = texture2D(lut, vec2((t * 255.0 + 0.5) / 256.0, 0.5)).rgb;",
    "      float curv = clamp((vSulc * 255.0 - 140.0) / 80.0, 0.0, 1.0);",  // a trace of the sulci under the data
    "      col = c * (0.5 + 0.5 * shade) * (0.86 + 0.14 * curv);",
    "    }",
    "  }",
    "  gl_FragColor = vec4(col, 1.0);",
    "}"].join("\n");

  // Brain RAS (x right, y anterior, z up) -> screen (x right, y up, z to the viewer), per preset
  // and hemisphere, as the three rows of a rotation.
  var VIEWS = {
    dorsal: { lh: [[1, 0, 0], [0, 1, 0], [0, 0, 1]], rh: [[1, 0, 0], [0, 1, 0], [0, 0, 1]], left: "lh" },
    ventral: { lh: [[-1, 0, 0], [0, 1, 0], [0, 0, -1]], rh: [[-1, 0, 0], [0, 1, 0], [0, 0, -1]], left: "rh" },
    posterior: { lh: [[1, 0, 0], [0, 0, 1], [0, -1, 0]], rh: [[1, 0, 0], [0, 0, 1], [0, -1, 0]], left: "lh" },
    lateral: { lh: [[0, -1, 0], [0, 0, 1], [-1, 0, 0]], rh: [[0, 1, 0], [0, 0, 1], [1, 0, 0]], left: "lh" },
    medial: { lh: [[0, 1, 0], [0, 0, 1], [1, 0, 0]], rh: [[0, -1, 0], [0, 0, 1], [-1, 0, 0]], left: "lh" },
    flat: { lh: [[1, 0, 0], [0, 1, 0], [0, 0, 1]], rh: [[1, 0, 0], [0, 1, 0], [0, 0, 1]], left: "lh" }
  };

  async function buildCortex(s) {
    var g = { s: s, meshes: {}, faceSets: [] };
    for (var i = 0; i < s.face_sets.length; i++) {
      var fs = s.face_sets[i];
      g.faceSets.push({ faces: await unz(fs.faces_z, fs.dtype), outlines: await unz(fs.outlines_z, fs.dtype) });
    }
    for (var k = 0; k < s.meshes.length; k++) {
      var m = s.meshes[k], entry = { kind: m.kind, label: m.label, hemis: {} };
      for (var h of ["lh", "rh"]) entry.hemis[h] = { pos: await unz(m.hemis[h].pos_z, "f2"), faces: m.hemis[h].faces };
      g.meshes[m.kind] = entry;
    }
    g.sulc = await unz(s.sulc_z, "u1");
    g.labels = await unz(s.labels_z, "i2");
    g.unitOfVertex = await unz(s.unit_of_vertex_z, "i4");
    g.vertexOfUnit = new Int32Array(s.n_units);
    for (var v = 0; v < g.unitOfVertex.length; v++) if (g.unitOfVertex[v] >= 0) g.vertexOfUnit[g.unitOfVertex[v]] = v;
    g.offset = { lh: 0, rh: s.n_lh };
    g.count = { lh: s.n_lh, rh: s.n_total - s.n_lh };
    return g;
  }

  function mountBrain(element, props, watch, server) {
    var root = element.querySelector(".ctx-brain") || element;
    var canvas = root.querySelector(".ctx-gl"), stage = root.querySelector(".ctx-stage");
    var tip = root.querySelector(".ctx-tip"), status = root.querySelector(".ctx-status");
    var names = root.querySelector(".ctx-names"), readout = root.querySelector(".ctx-readout");
    var meshSel = root.querySelector(".ctx-mesh"), outlinesBox = root.querySelector(".ctx-outlines");
    var st = { geo: null, sid: null, pending: null, val: null, meta: null, mesh: "inflated", view: "lateral", three: null };
    function setStatus(t) { if (status) status.textContent = t; }
    var colour = new ColourScale(root, function () { applyColour(); draw(); colour.drawBar(!!st.val); });

    // ---- three.js scene, created on the first geometry (panels never used cost no WebGL context)
    function scene3() {
      if (st.three) return st.three;
      var T = {};
      T.renderer = new THREE.WebGLRenderer({ canvas: canvas, antialias: true, preserveDrawingBuffer: true });
      THREE.ColorManagement.enabled = false;
      T.renderer.outputColorSpace = THREE.LinearSRGBColorSpace;  // LUT colours are shown as given
      T.renderer.setClearColor(0xffffff, 1);
      T.renderer.setPixelRatio(Math.min(2, window.devicePixelRatio || 1));
      T.scene = new THREE.Scene();
      T.camera = new THREE.PerspectiveCamera(20, 1.6, 1, 10000);
      T.world = new THREE.Group(); T.scene.add(T.world);
      T.lutTex = new THREE.DataTexture(new Uint8Array(256 * 4), 256, 1, THREE.RGBAFormat);
      T.lutTex.magFilter = THREE.LinearFilter; T.lutTex.minFilter = THREE.LinearFilter;
      T.uniforms = { lut: { value: T.lutTex }, vmin: { value: -1 }, vmax: { value: 1 }, thr: { value: -1 }, symm: { value: 1 }, showData: { value: 0 } };
      T.material = new THREE.ShaderMaterial({ uniforms: T.uniforms, vertexShader: VERT, fragmentShader: FRAG, side: THREE.DoubleSide,
        polygonOffset: true, polygonOffsetFactor: 1, polygonOffsetUnits: 1 });
      T.lineMaterial = new THREE.LineBasicMaterial({ color: 0x161616 });
      T.nodes = {}; T.meshes = {}; T.lines = {};
      ["lh", "rh"].forEach(function (h) {
        var node = new THREE.Group(); node.matrixAutoUpdate = false;
        var mesh = new THREE.Mesh(new THREE.BufferGeometry(), T.material); mesh.userData.hemi = h;
        var lines = new THREE.LineSegments(new THREE.BufferGeometry(), T.lineMaterial);
        node.add(mesh); node.add(lines); T.world.add(node);
        T.nodes[h] = node; T.meshes[h] = mesh; T.lines[h] = lines;
      });
      T.zoom = 1;
      st.three = T;
      return T;
    }

    // Per-vertex attributes that do not depend on the mesh kind.
    function vertexAttributes(g) {
      var T = st.three;
      ["lh", "rh"].forEach(function (h) {
        var n = g.count[h], off = g.offset[h], sulc = new Float32Array(n);
        for (var i = 0; i < n; i++) sulc[i] = g.sulc[off + i] / 255;
        g["sulc_" + h] = sulc;
        g["value_" + h] = new Float32Array(n);
        g["has_" + h] = new Float32Array(n);
      });
      T.attrs = g;
    }

    // Put one mesh kind into the scene: positions centred per hemisphere, faces, normals, outlines.
    function useMesh(kind) {
      var g = st.geo, T = st.three;
      if (!g.meshes[kind]) kind = Object.keys(g.meshes)[0];
      st.mesh = kind; meshSel.value = kind;
      ["lh", "rh"].forEach(function (h) {
        var mh = g.meshes[kind].hemis[h], fs = g.faceSets[mh.faces], src = mh.pos, n = g.count[h];
        var lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
        for (var i = 0; i < n; i++) for (var d = 0; d < 3; d++) { var x = src[3 * i + d]; if (x < lo[d]) lo[d] = x; if (x > hi[d]) hi[d] = x; }
        var c = [(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2], pos = new Float32Array(3 * n);
        for (var j = 0; j < n; j++) for (var e = 0; e < 3; e++) pos[3 * j + e] = src[3 * j + e] - c[e];
        var geom = new THREE.BufferGeometry();
        geom.setAttribute("position", new THREE.BufferAttribute(pos, 3));
        geom.setIndex(new THREE.BufferAttribute(fs.faces, 1));
        geom.setAttribute("sulc", new THREE.BufferAttribute(g["sulc_" + h], 1));
        geom.setAttribute("value", new THREE.BufferAttribute(g["value_" + h], 1));
        geom.setAttribute("has", new THREE.BufferAttribute(g["has_" + h], 1));
        geom.computeVertexNormals(); geom.computeBoundingSphere();
        T.meshes[h].geometry.dispose(); T.meshes[h].geometry = geom;
        // Outlines: midpoints of mesh edges, lifted a little along the normal so they stay visible.
        var ol = fs.outlines, nrm = geom.getAttribute("normal").array, lp = new Float32Array(ol.length / 4 * 6);
        for (var k = 0, o = 0; k < ol.length; k += 4) {
          for (var end = 0; end < 2; end++) {
            var p = ol[k + 2 * end], q = ol[k + 2 * end + 1];
            for (var a = 0; a < 3; a++) lp[o++] = 0.5 * (pos[3 * p + a] + pos[3 * q + a]) + 0.25 * (nrm[3 * p + a] + nrm[3 * q + a]);
          }
        }
        var lg = new THREE.BufferGeometry(); lg.setAttribute("position", new THREE.BufferAttribute(lp, 3));
        T.lines[h].geometry.dispose(); T.lines[h].geometry = lg;
        T.lines[h].visible = outlinesBox.checked;
        g["centre_" + h] = c;
      });
      buildNames();
      setView(kind === "flat" ? "flat" : st.view === "flat" ? "lateral" : st.view);
      root.dataset.mesh = kind;
    }

    // A preset: turn each hemisphere, lay the two side by side, reset rotation, pan and zoom.
    function setView(view) {
      var T = st.three, g = st.geo, spec = VIEWS[st.mesh === "flat" ? "flat" : view] || VIEWS.lateral;
      st.view = st.mesh === "flat" ? "flat" : view;
      var boxes = {};
      ["lh", "rh"].forEach(function (h) {
        var R = spec[h], m = new THREE.Matrix4().set(R[0][0], R[0][1], R[0][2], 0, R[1][0], R[1][1], R[1][2], 0, R[2][0], R[2][1], R[2][2], 0, 0, 0, 0, 1);
        var pos = T.meshes[h].geometry.getAttribute("position").array, lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
        for (var i = 0; i < pos.length; i += 3) {
          for (var r = 0; r < 3; r++) {
            var x = R[r][0] * pos[i] + R[r][1] * pos[i + 1] + R[r][2] * pos[i + 2];
            if (x < lo[r]) lo[r] = x; if (x > hi[r]) hi[r] = x;
          }
        }
        boxes[h] = { m: m, lo: lo, hi: hi };
      });
      var left = spec.left, right = left === "lh" ? "rh" : "lh", gap = st.mesh === "flat" ? 12 : 6;
      var bl = boxes[left], br = boxes[right];
      var wl = bl.hi[0] - bl.lo[0], wr = br.hi[0] - br.lo[0], total = wl + gap + wr;
      var xl = -total / 2 - bl.lo[0], xr = -total / 2 + wl + gap - br.lo[0];
      [[left, xl], [right, xr]].forEach(function (it) {
        var b = boxes[it[0]], yc = -(b.lo[1] + b.hi[1]) / 2, zc = -(b.lo[2] + b.hi[2]) / 2;
        b.m.setPosition(it[1], yc, zc);
        T.nodes[it[0]].matrix.copy(b.m); T.nodes[it[0]].matrixWorldNeedsUpdate = true;
      });
      var height = Math.max(bl.hi[1] - bl.lo[1], br.hi[1] - br.lo[1]);
      T.extent = { w: total, h: height };
      T.world.quaternion.identity(); T.world.position.set(0, 0, 0); T.zoom = 1;
      fitCamera();
      root.dataset.view = st.view;
      root.querySelectorAll(".ctx-view").forEach(function (b) { b.classList.toggle("ctx-on", b.dataset.view === st.view); });
      draw();
    }

    function fitCamera() {
      var T = st.three, w = canvas.clientWidth || 640, h = canvas.clientHeight || 400, aspect = w / h;
      var half = Math.tan(T.camera.fov * Math.PI / 360);
      var need = Math.max(T.extent.h / 2, T.extent.w / 2 / aspect) * 1.08;
      var dist = need / half + 80;
      T.camera.aspect = aspect; T.camera.position.set(0, 0, dist / T.zoom); T.camera.lookAt(0, 0, 0);
      T.camera.near = Math.max(1, dist / T.zoom - 400); T.camera.far = dist / T.zoom + 400;
      T.camera.updateProjectionMatrix();
    }

    function resize() {
      var T = st.three;
      if (!T) return false;
      var w = canvas.clientWidth, h = canvas.clientHeight;
      if (w < 20 || h < 20) return false;
      var size = T.renderer.getSize(new THREE.Vector2());
      if (size.x !== w || size.y !== h) { T.renderer.setSize(w, h, false); if (T.extent) fitCamera(); }
      return true;
    }

    // Region names at their anchors, shown when the anchor faces the viewer.
    function buildNames() {
      var g = st.geo;
      names.innerHTML = "";
      g.nameEls = g.s.anchors.map(function (a) {
        var d = document.createElement("div");
        d.className = "ctx-name"; d.textContent = g.s.roi_names[a.label] || ""; names.appendChild(d);
        return { el: d, hemi: a.hemi, vertex: a.vertex };
      });
    }
    var _v = null, _n = null;
    function placeNames() {
      var T = st.three, g = st.geo;
      if (!g.nameEls) return;
      var show = outlinesBox.checked, w = canvas.clientWidth, h = canvas.clientHeight;
      _v = _v || new THREE.Vector3(); _n = _n || new THREE.Vector3();
      var camPos = T.camera.position;
      g.nameEls.forEach(function (it) {
        var mesh = T.meshes[it.hemi], pos = mesh.geometry.getAttribute("position").array, nr = mesh.geometry.getAttribute("normal").array, i = 3 * it.vertex;
        _v.set(pos[i], pos[i + 1], pos[i + 2]).applyMatrix4(mesh.matrixWorld);
        _n.set(nr[i], nr[i + 1], nr[i + 2]).transformDirection(mesh.matrixWorld);
        var facing = st.mesh === "flat" || _n.dot(new THREE.Vector3().subVectors(camPos, _v).normalize()) > 0.25;
        var p = _v.clone().project(T.camera);
        var inside = p.x > -1 && p.x < 1 && p.y > -1 && p.y < 1;
        if (!show || !facing || !inside) { it.el.style.display = "none"; return; }
        it.el.style.display = "";
        it.el.style.left = ((p.x + 1) / 2 * w) + "px"; it.el.style.top = ((1 - p.y) / 2 * h) + "px";
      });
    }

    function applyColour() {
      var T = st.three;
      if (!T) return;
      var lim = colour.limits(), lut = colour.lut(), data = T.lutTex.image.data;
      for (var i = 0; i < 256; i++) { data[4 * i] = lut[3 * i]; data[4 * i + 1] = lut[3 * i + 1]; data[4 * i + 2] = lut[3 * i + 2]; data[4 * i + 3] = 255; }
      T.lutTex.needsUpdate = true;
      T.uniforms.vmin.value = lim.vmin; T.uniforms.vmax.value = lim.vmax;
      T.uniforms.thr.value = lim.thr === null ? -1 : lim.thr; T.uniforms.symm.value = lim.symmetric ? 1 : 0;
      T.uniforms.showData.value = st.val ? 1 : 0;
    }

    // Per-unit values -> per-vertex attributes (no data: has = 0).
    function uploadValues() {
      var g = st.geo, T = st.three, val = st.val;
      ["lh", "rh"].forEach(function (h) { g["value_" + h].fill(0); g["has_" + h].fill(0); });
      if (val) {
        for (var u = 0; u < val.length; u++) {
          var x = val[u];
          if (x !== x) continue;
          var v = g.vertexOfUnit[u], h = v < g.s.n_lh ? "lh" : "rh", i = v - g.offset[h];
          g["value_" + h][i] = x; g["has_" + h][i] = 1;
        }
      }
      ["lh", "rh"].forEach(function (h) {
        var geom = T.meshes[h].geometry;
        geom.getAttribute("value").needsUpdate = true; geom.getAttribute("has").needsUpdate = true;
      });
    }

    var frame = 0;
    function draw() {
      var T = st.three;
      if (!T || !st.geo || !resize()) return false;
      T.renderer.render(T.scene, T.camera);
      placeNames();
      root.dataset.renders = String((+root.dataset.renders || 0) + 1);
      return true;
    }
    function drawSoon() { if (!frame) frame = requestAnimationFrame(function () { frame = 0; draw(); }); }

    function showValue(v) {
      if (v.clear) {
        st.val = null; st.meta = null; st.lastB64 = null; colour.clear(v.title);
        if (st.geo) { uploadValues(); applyColour(); draw(); }
        setStatus(v.title || ""); return;
      }
      if (!st.geo) { st.pending = v; setStatus("loading surface\u2026"); return; }
      if (v.n !== st.geo.s.n_units) {
        st.pending = v; setStatus("values (" + v.n + ") do not match this unit space (" + st.geo.s.n_units + ")"); return;
      }
      var t0 = performance.now();
      st.pending = null; st.val = values16(v.v); st.meta = v; st.lastB64 = v.v;
      colour.onValues(v);
      uploadValues(); applyColour(); draw(); colour.drawBar(true);
      setStatus("");
      root.dataset.paintMs = (performance.now() - t0).toFixed(1);
      markPaint(element, root, v.title);
    }

    var built = new Map();
    function showStatic(s) {
      st.sid = s.sid; st.geo = null; st.val = null;
      setStatus("loading surface\u2026"); root.dataset.sid = "";
      colour.setLuts(s.luts);
      var t0 = performance.now(), job = built.get(s.sid) || buildCortex(s);
      built.delete(s.sid); built.set(s.sid, job);
      while (built.size > 3) built.delete(built.keys().next().value);
      job.then(function (g) {
        if (st.sid !== s.sid) return;
        scene3(); st.geo = g; vertexAttributes(g);
        meshSel.innerHTML = s.meshes.map(function (m) { return "<option value=\"" + esc(m.kind) + "\">" + esc(m.label) + "</option>"; }).join("");
        useMesh(g.meshes[st.mesh] ? st.mesh : s.meshes[0].kind);
        root.dataset.sid = s.sid; root.dataset.buildMs = (performance.now() - t0).toFixed(0);
        setStatus("");
        if (st.pending) showValue(st.pending); else { applyColour(); draw(); }
      }).catch(function (e) { built.delete(s.sid); console.error("Cortextual brain panel:", e); setStatus("could not draw the surface: " + e); });
    }

    // ---- interaction: drag rotates, right/shift-drag pans, wheel zooms, hover/click picks
    var drag = null;
    canvas.addEventListener("contextmenu", function (ev) { ev.preventDefault(); });
    canvas.addEventListener("pointerdown", function (ev) {
      if (!st.three) return;
      ev.preventDefault();  // no text selection, no native drag
      canvas.setPointerCapture(ev.pointerId);
      drag = { x: ev.clientX, y: ev.clientY, x0: ev.clientX, y0: ev.clientY, pan: ev.button === 2 || ev.shiftKey };
    });
    canvas.addEventListener("pointermove", function (ev) {
      var T = st.three;
      if (!T) return;
      if (drag) {
        var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
        drag.x = ev.clientX; drag.y = ev.clientY;
        if (drag.pan) {
          var per = (T.camera.position.z * 2 * Math.tan(T.camera.fov * Math.PI / 360)) / (canvas.clientHeight || 400);
          T.world.position.x += dx * per; T.world.position.y -= dy * per;
        } else {
          var q1 = new THREE.Quaternion().setFromAxisAngle(new THREE.Vector3(0, 1, 0), dx * 0.01);
          var q2 = new THREE.Quaternion().setFromAxisAngle(new THREE.Vector3(1, 0, 0), dy * 0.01);
          T.world.quaternion.premultiply(q1).premultiply(q2);
        }
        tip.hidden = true; drawSoon(); return;
      }
      hoverSoon(ev);
    });
    function endDrag(ev) {
      if (!drag) return;
      var moved = Math.abs(ev.clientX - drag.x0) + Math.abs(ev.clientY - drag.y0);
      drag = null;
      if (moved < 4) pick(ev, true);
    }
    canvas.addEventListener("pointerup", endDrag);
    canvas.addEventListener("pointercancel", function () { drag = null; });
    canvas.addEventListener("mouseleave", function () { tip.hidden = true; });
    canvas.addEventListener("wheel", function (ev) {
      var T = st.three;
      if (!T) return;
      ev.preventDefault();
      T.zoom = Math.min(12, Math.max(0.4, T.zoom * Math.exp(-ev.deltaY * 0.0015)));
      fitCamera(); drawSoon();
    }, { passive: false });
    canvas.addEventListener("dblclick", function (ev) { ev.preventDefault(); if (st.three) setView(st.view); });

    var hoverEv = null, hoverFrame = 0;
    function hoverSoon(ev) {
      hoverEv = ev;
      if (!hoverFrame) hoverFrame = requestAnimationFrame(function () { hoverFrame = 0; pick(hoverEv, false); });
    }
    var raycaster = null;
    // Vertex, region and value under the pointer (the nearest corner of the triangle hit).
    function pick(ev, pin) {
      var T = st.three, g = st.geo;
      if (!T || !g) return null;
      var r = canvas.getBoundingClientRect();
      var ndc = new THREE.Vector2(((ev.clientX - r.left) / r.width) * 2 - 1, -((ev.clientY - r.top) / r.height) * 2 + 1);
      raycaster = raycaster || new THREE.Raycaster();
      T.world.updateMatrixWorld(true);
      raycaster.setFromCamera(ndc, T.camera);
      var hits = raycaster.intersectObjects([T.meshes.lh, T.meshes.rh], false);
      if (!hits.length) { placeTip(tip, stage, ev, ""); return null; }
      var hit = hits[0], mesh = hit.object, h = mesh.userData.hemi, local = mesh.worldToLocal(hit.point.clone());
      var pos = mesh.geometry.getAttribute("position").array, best = -1, bd = Infinity;
      [hit.face.a, hit.face.b, hit.face.c].forEach(function (vi) {
        var d = Math.pow(pos[3 * vi] - local.x, 2) + Math.pow(pos[3 * vi + 1] - local.y, 2) + Math.pow(pos[3 * vi + 2] - local.z, 2);
        if (d < bd) { bd = d; best = vi; }
      });
      var v = best + g.offset[h], label = g.labels[v], region = label > 0 ? g.s.roi_names[label] || "" : "";
      var u = g.unitOfVertex[v], value = u >= 0 && st.val ? st.val[u] : NaN;
      var info = { hemi: h, vertex: best, index: v, region: region, value: value === value ? value : null };
      var html = "<b>" + h + "</b> vertex " + best + (region ? " \u00b7 " + esc(region) : "") + "<br>" +
        (u < 0 ? "no data here" : value === value ? "value " + fmt(value) + (colour.units() ? " " + esc(colour.units()) : "") : "no value");
      placeTip(tip, stage, ev, html);
      root.dataset.hover = JSON.stringify(info);
      if (pin) { root.dataset.pick = JSON.stringify(info); if (readout) readout.innerHTML = html.replace("<br>", " \u00b7 "); }
      return info;
    }

    // ---- toolbar
    meshSel.addEventListener("change", function () { if (st.geo) useMesh(meshSel.value); });
    outlinesBox.addEventListener("change", function () {
      if (!st.three) return;
      st.three.lines.lh.visible = st.three.lines.rh.visible = outlinesBox.checked; draw();
    });
    root.querySelectorAll(".ctx-view").forEach(function (b) {
      b.addEventListener("click", function () {
        if (!st.geo) return;
        if (st.mesh === "flat") useMesh(Object.keys(st.geo.meshes)[0]);
        setView(b.dataset.view);
      });
    });
    root.querySelector(".ctx-png").addEventListener("click", function () {
      if (draw()) downloadBlob(canvas, (st.meta && st.meta.title) || "brain");
    });
    var exportBtn = root.querySelector(".ctx-export"), transparent = root.querySelector(".ctx-transparent");
    exportBtn.addEventListener("click", async function () {
      if (!server || !server.export_figure) { setStatus("figure export needs the viewer's server"); return; }
      if (!st.val || !st.lastB64) { setStatus("nothing to export yet"); return; }
      var settings = colour.settings();
      settings.mesh = st.mesh; settings.transparent = transparent.checked;
      exportBtn.disabled = true; setStatus("rendering the figure on the server\u2026");
      var t0 = performance.now();
      try {
        var res = await server.export_figure({ sid: st.sid, values: st.lastB64, settings: settings });
        if (!res || res.error) { setStatus((res && res.error) || "export failed"); return; }
        var bytes = b64bytes(res.png), a = document.createElement("a");
        a.href = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
        a.download = ((settings.title || "brain").replace(/[^\w.-]+/g, "_").slice(0, 80) || "brain") + ".png";
        document.body.appendChild(a); a.click(); a.remove();
        setTimeout(function () { URL.revokeObjectURL(a.href); }, 5000);
        root.dataset.exported = JSON.stringify({ width: res.width, height: res.height, ms: res.ms, bytes: bytes.length });
        setStatus("figure " + res.width + "\u00d7" + res.height + " px, rendered in " + (res.ms / 1000).toFixed(1) + " s (round trip " + ((performance.now() - t0) / 1000).toFixed(1) + " s)");
      } catch (e) {
        setStatus("export failed: " + e);
      } finally { exportBtn.disabled = false; }
    });

    if (typeof ResizeObserver !== "undefined") new ResizeObserver(function () { if (st.three && st.geo) { drawSoon(); colour.drawBar(!!st.val); } }).observe(canvas);
    bindProps(root, props, watch, showStatic, showValue);
  }

  function downloadBlob(canvas, stem) {
    canvas.toBlob(function (blob) {
      if (!blob) return;
      var a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = (stem || "figure").replace(/[^\w.-]+/g, "_").slice(0, 80) + ".png";
      document.body.appendChild(a); a.click(); a.remove();
      setTimeout(function () { URL.revokeObjectURL(a.href); }, 2000);
    }, "image/png");
  }

  // ------------------------------------------------------------------ mouse (neurons) panel

  async function buildNeurons(s) {
    var g = { s: s, area: await unz(s.area_z, "i2"), x: await unz(s.x_z, "f4"), y: await unz(s.y_z, "f4"), outlines: [] };
    for (var i = 0; i < s.outlines.length; i++) g.outlines.push({ name: s.outlines[i].name, xy: await unz(s.outlines[i].xy_z, "f4") });
    g.extra = [];
    for (var j = 0; j < (s.extra || []).length; j++) {
      var e = s.extra[j];
      g.extra.push({ name: e.name, data: await unz(e.data_z, e.dtype), names: e.names || null, unit: e.unit || "" });
    }
    // Map mm -> canvas pixels: y (anterior) up, equal scale on both axes.
    var xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
    function ext(x, y) { if (x < xmin) xmin = x; if (x > xmax) xmax = x; if (y < ymin) ymin = y; if (y > ymax) ymax = y; }
    for (var k = 0; k < g.x.length; k++) if (isFinite(g.x[k]) && isFinite(g.y[k])) ext(g.x[k], g.y[k]);
    g.outlines.forEach(function (o) { for (var i = 0; i < o.xy.length; i += 2) ext(o.xy[i], o.xy[i + 1]); });
    if (!isFinite(xmin)) { xmin = ymin = -1; xmax = ymax = 1; }
    var W = s.width || 900, margin = 0.11 * W, top = 0.08 * W, bottom = 0.07 * W;  // title and colour bar are HTML around the canvas
    var scale = (W - 2 * margin) / Math.max(1e-6, xmax - xmin);
    var H = Math.round(top + bottom + scale * (ymax - ymin));
    if (H > 1.2 * W) { scale *= (1.2 * W - top - bottom) / (H - top - bottom); H = Math.round(1.2 * W); }
    var ox = (W - scale * (xmax - xmin)) / 2;
    g.W = W; g.H = H; g.top = top; g.bottom = bottom;
    g.px = function (x) { return ox + (x - xmin) * scale; };
    g.py = function (y) { return top + (ymax - y) * scale; };
    g.cx = new Float32Array(g.x.length); g.cy = new Float32Array(g.x.length);
    for (var m = 0; m < g.x.length; m++) { g.cx[m] = g.px(g.x[m]); g.cy[m] = g.py(g.y[m]); }
    // Dots fill about a quarter of the map's area, within 2..6 canvas px of radius.
    g.radius = Math.max(2, Math.min(6, 0.5 * Math.sqrt((W - 2 * margin) * (H - top - bottom) / Math.max(1, g.x.length)) / 1.8));
    return g;
  }

  function renderNeurons(ctx, g, val, colour) {
    var W = g.W, H = g.H;
    ctx.save();
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
    var sc = cssScale(ctx.canvas), font = Math.round(12 * sc);
    ctx.lineJoin = "round";
    g.outlines.forEach(function (o) {
      ctx.beginPath();
      for (var i = 0; i < o.xy.length; i += 2) (i ? ctx.lineTo : ctx.moveTo).call(ctx, g.px(o.xy[i]), g.py(o.xy[i + 1]));
      ctx.closePath();
      ctx.fillStyle = "#f2f2f0"; ctx.fill();
      ctx.strokeStyle = "#3a3a3a"; ctx.lineWidth = Math.max(1, 1.3 * sc); ctx.stroke();
    });
    var n = g.x.length, lim = colour.limits(), lut = colour.lut(), r = g.radius, span = Math.max(1e-12, lim.vmax - lim.vmin);
    // Strongest responses last, so they stay visible where dots overlap.
    var order = new Uint32Array(n);
    for (var i = 0; i < n; i++) order[i] = i;
    if (val) {
      var key = new Float32Array(n);
      for (var j = 0; j < n; j++) key[j] = val[j] === val[j] ? (lim.symmetric ? Math.abs(val[j]) : val[j]) : -Infinity;
      order.sort(function (a, b) { return key[a] - key[b]; });
    }
    ctx.lineWidth = Math.max(0.6, r / 5);
    for (var t = 0; t < n; t++) {
      var k = order[t], x = g.cx[k], y = g.cy[k];
      if (!(x === x && y === y)) continue;
      var v = val ? val[k] : NaN;
      var shown = v === v && (lim.thr === null || (lim.symmetric ? Math.abs(v) >= lim.thr : v >= lim.thr));
      ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
      if (shown) {
        var c = 3 * Math.min(255, Math.max(0, Math.floor((v - lim.vmin) / span * 255.999)));
        ctx.fillStyle = "rgb(" + lut[c] + "," + lut[c + 1] + "," + lut[c + 2] + ")";
        ctx.fill(); ctx.strokeStyle = "rgba(0,0,0,0.45)"; ctx.stroke();
      } else {
        ctx.fillStyle = "#d9d9d9"; ctx.fill(); ctx.strokeStyle = "rgba(0,0,0,0.25)"; ctx.stroke();
      }
    }
    // Area names last, with a white halo so dots never hide them. Each name sits just outside its
    // outline, on the side facing away from the middle of the map, so neighbours do not collide.
    ctx.font = "600 " + font + "px sans-serif";
    ctx.lineWidth = Math.max(2, font / 4); ctx.strokeStyle = "rgba(255,255,255,0.9)"; ctx.fillStyle = "#222";
    var cents = g.outlines.map(function (o) {
      var sx = 0, sy = 0, cnt = o.xy.length / 2;
      for (var i = 0; i < o.xy.length; i += 2) { sx += g.px(o.xy[i]); sy += g.py(o.xy[i + 1]); }
      return [sx / Math.max(1, cnt), sy / Math.max(1, cnt)];
    });
    var mx = 0, my = 0;
    cents.forEach(function (c) { mx += c[0] / cents.length; my += c[1] / cents.length; });
    g.outlines.forEach(function (o, oi) {
      var c = cents[oi], dx = c[0] - mx, dy = c[1] - my, d = Math.hypot(dx, dy);
      if (d < 1e-6) { dx = 0; dy = -1; } else { dx /= d; dy /= d; }
      var best = -Infinity, ax = c[0], ay = c[1];
      for (var i = 0; i < o.xy.length; i += 2) {
        var px = g.px(o.xy[i]), py = g.py(o.xy[i + 1]), proj = (px - c[0]) * dx + (py - c[1]) * dy;
        if (proj > best) { best = proj; ax = px; ay = py; }
      }
      ax += 0.45 * font * dx; ay += 0.45 * font * dy;
      ctx.textAlign = dx > 0.6 ? "left" : dx < -0.6 ? "right" : "center";
      ctx.textBaseline = dy > 0.6 ? "top" : dy < -0.6 ? "bottom" : "middle";
      var tw = ctx.measureText(o.name).width;
      var left = ctx.textAlign === "left" ? ax : ctx.textAlign === "right" ? ax - tw : ax - tw / 2;
      ax += Math.max(0, 4 - left) - Math.max(0, left + tw - (W - 4));
      ctx.strokeText(o.name, ax, ay); ctx.fillText(o.name, ax, ay);
    });
    ctx.restore();
  }

  // Canvas pixels per CSS pixel: text is sized for the screen, whatever the canvas resolution.
  function cssScale(canvas) {
    var w = canvas.getBoundingClientRect().width;
    return w > 20 ? canvas.width / w : 1.6;
  }

  function mountMouse(element, props, watch) {
    var root = element.querySelector(".ctx-mouse") || element;
    var canvas = root.querySelector(".ctx-canvas"), ctx = canvas.getContext("2d");
    var tip = root.querySelector(".ctx-tip"), stage = root.querySelector(".ctx-stage");
    var status = root.querySelector(".ctx-status");
    var st = { sid: null, geo: null, pending: null, val: null, meta: null };
    function setStatus(t) { if (status) status.textContent = t; }
    var colour = new ColourScale(root, function () { draw(); colour.drawBar(!!st.val); });
    function draw() {
      if (!st.geo) return;
      var t0 = performance.now();
      renderNeurons(ctx, st.geo, st.val, colour);
      root.dataset.renderMs = (performance.now() - t0).toFixed(1);
      root.dataset.renders = String((+root.dataset.renders || 0) + 1);
    }
    function showValue(v) {
      if (v.clear) { st.val = null; st.meta = null; colour.clear(v.title); setStatus(v.title || ""); draw(); return; }
      if (!st.geo) { st.pending = v; setStatus("loading area map\u2026"); return; }
      if (v.n !== st.geo.s.n_units) {
        st.pending = v;
        setStatus("values (" + v.n + ") do not match this unit space (" + st.geo.s.n_units + ")");
        return;
      }
      st.pending = null; st.val = values16(v.v); st.meta = v;
      colour.onValues(v); setStatus(""); draw(); colour.drawBar(true);
      markPaint(element, root, v.title);
    }
    function showStatic(s) {
      st.sid = s.sid; st.geo = null; st.val = null; root.dataset.sid = "";
      setStatus("loading area map\u2026");
      colour.setLuts(s.luts);
      buildNeurons(s).then(function (g) {
        if (st.sid !== s.sid) return;
        canvas.width = g.W; canvas.height = g.H;
        st.geo = g; root.dataset.sid = s.sid; setStatus("");
        if (st.pending) showValue(st.pending); else draw();
      }).catch(function (e) { console.error("Cortextual mouse panel:", e); setStatus("could not draw the area map: " + e); });
    }
    canvas.addEventListener("mousemove", function (ev) {
      var g = st.geo;
      if (!g) return placeTip(tip, stage, ev, "");
      var p = canvasPoint(canvas, ev), best = -1, bd = Math.pow(Math.max(6, 1.6 * g.radius), 2);
      for (var i = 0; i < g.cx.length; i++) {
        var dx = g.cx[i] - p[0], dy = g.cy[i] - p[1], d = dx * dx + dy * dy;
        if (d <= bd) { bd = d; best = i; }
      }
      if (best < 0) return placeTip(tip, stage, ev, "");
      var value = st.val ? st.val[best] : NaN;
      var html = "neuron <b>" + best + "</b> \u00b7 " + esc(g.s.areas[g.area[best]] || "?");
      g.extra.forEach(function (e) {
        var d = e.data[best];
        html += "<br>" + esc(e.name) + " " + esc(e.names ? (e.names[d] || d) : fmt(d) + (e.unit ? " " + e.unit : ""));
      });
      html += "<br>" + (value === value ? "value " + fmt(value) + (colour.units() ? " " + esc(colour.units()) : "") : "no value");
      placeTip(tip, stage, ev, html);
    });
    canvas.addEventListener("mouseleave", function () { tip.hidden = true; });
    root.querySelector(".ctx-png").addEventListener("click", function () { downloadBlob(canvas, (st.meta && st.meta.title) || "neurons"); });
    if (typeof ResizeObserver !== "undefined") {
      var last = 0;
      new ResizeObserver(function () {
        var w = canvas.getBoundingClientRect().width;
        if (w > 20 && Math.abs(w - last) > 0.08 * last) { last = w; requestAnimationFrame(function () { draw(); colour.drawBar(!!st.val); }); }
      }).observe(canvas);
    }
    bindProps(root, props, watch, showStatic, showValue);
  }

  // Wire props -> state: `static_data` (geometry, once per dataset) and `value` (per switch).
  function bindProps(root, props, watch, onStatic, onValue) {
    var lastStatic = null, lastValue = null;
    root.ctxHasStatic = function () { return !!props[STATIC]; };  // for browser tests
    function sync() {
      var s = props[STATIC], v = props.value;
      if (s && s !== lastStatic && (!lastStatic || s.sid !== lastStatic.sid)) { lastStatic = s; onStatic(s); }
      else if (s) lastStatic = s;
      if (v !== lastValue) { lastValue = v; if (v) onValue(v); }
    }
    watch(["value", STATIC], sync);
    sync();
  }

  window.CortextualPanels = { mountBrain: mountBrain, mountMouse: mountMouse, _decode: { b64bytes: b64bytes, values16: values16 } };
})();

// Cortextual brain and mouse panels, drawn on a 2-D canvas (no WebGL: works in headless Chromium).
// Injected once per page through gr.HTML(head=...); each panel calls CortextualPanels.mountX from
// its js_on_load with its own `element`, so several panels coexist without global element ids.
// The payload formats are written by viewer/brain_panel.py and viewer/mouse_panel.py.
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

  function lutIndex(v, vmax) {
    var t = Math.round((v / vmax) * 127.5 + 127.5);
    return t < 0 ? 0 : t > 255 ? 255 : t;
  }

  function drawColorbar(ctx, lut, cx, y, w, h, vmax, label, font) {
    var x0 = Math.round(cx - w / 2);
    var img = ctx.createImageData(Math.max(1, Math.round(w)), Math.max(1, Math.round(h)));
    for (var i = 0; i < img.width; i++) {
      var k = Math.min(255, Math.floor((i / (img.width - 1)) * 255.999));
      for (var j = 0; j < img.height; j++) {
        var o = 4 * (j * img.width + i);
        img.data[o] = lut[3 * k]; img.data[o + 1] = lut[3 * k + 1]; img.data[o + 2] = lut[3 * k + 2]; img.data[o + 3] = 255;
      }
    }
    ctx.putImageData(img, x0, Math.round(y));
    ctx.save();
    ctx.strokeStyle = "#444"; ctx.lineWidth = 1;
    ctx.strokeRect(x0 + 0.5, Math.round(y) + 0.5, img.width - 1, img.height - 1);
    ctx.fillStyle = "#222"; ctx.font = font + "px sans-serif"; ctx.textBaseline = "top";
    var ty = y + h + 0.35 * font;
    var ticks = [[0, "\u2212" + fmt(vmax).replace(/^-/, "")], [0.5, "0"], [1, fmt(vmax)]];
    ticks.forEach(function (t) {
      var tx = x0 + t[0] * (img.width - 1);
      ctx.beginPath(); ctx.moveTo(tx + 0.5, y + h); ctx.lineTo(tx + 0.5, y + h + 0.25 * font); ctx.stroke();
      ctx.textAlign = t[0] === 0 ? "left" : t[0] === 1 ? "right" : "center";
      ctx.fillText(t[1], tx, ty);
    });
    if (label) {
      ctx.textAlign = "left"; ctx.textBaseline = "middle";
      ctx.fillText(label, x0 + img.width + 0.6 * font, y + h / 2);
    }
    ctx.restore();
  }

  function drawTitle(ctx, text, maxWidth, y, font, cx) {
    if (!text) return;
    ctx.save();
    ctx.fillStyle = "#111"; ctx.font = "600 " + font + "px sans-serif";
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    var t = text;
    while (t.length > 4 && ctx.measureText(t + "\u2026").width > maxWidth) t = t.slice(0, -1);
    ctx.fillText(t === text ? t : t + "\u2026", cx, y);
    ctx.restore();
  }

  function setupPng(root, canvas, stem) {
    var btn = root.querySelector(".ctx-png");
    if (!btn) return;
    btn.addEventListener("click", function () {
      canvas.toBlob(function (blob) {
        if (!blob) return;
        var a = document.createElement("a");
        a.href = URL.createObjectURL(blob);
        a.download = (stem() || "figure").replace(/[^\w.-]+/g, "_").slice(0, 80) + ".png";
        document.body.appendChild(a); a.click(); a.remove();
        setTimeout(function () { URL.revokeObjectURL(a.href); }, 2000);
      }, "image/png");
    });
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

  // Redraw when the displayed size changes (text is sized in screen pixels; hidden tabs have 0).
  function watchSize(canvas, draw) {
    if (typeof ResizeObserver === "undefined") return;
    var last = 0;
    new ResizeObserver(function () {
      var w = canvas.getBoundingClientRect().width;
      if (w > 20 && Math.abs(w - last) > 0.08 * last) { last = w; requestAnimationFrame(draw); }
    }).observe(canvas);
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

  // ------------------------------------------------------------------ brain (surface) panel

  async function buildSurface(s) {
    var hemis = {}, names = ["lh", "rh"];
    for (var hi = 0; hi < 2; hi++) {
      var h = s.hemis[names[hi]];
      hemis[names[hi]] = { faces: await unz(h.faces_z, h.dtype), n: h.n_vertices, offset: hi === 0 ? 0 : s.n_lh };
    }
    var sulc = await unz(s.sulc_z, "u1");
    var labels = await unz(s.labels_z, "i2");
    var unitOfVertex = await unz(s.unit_of_vertex_z, "i4");
    var vertexOfUnit = new Int32Array(s.n_units);
    for (var v = 0; v < unitOfVertex.length; v++) if (unitOfVertex[v] >= 0) vertexOfUnit[unitOfVertex[v]] = v;
    var W = s.width, H = s.height;

    // Per covered pixel: destination, the three global vertex ids and barycentric weights, the
    // shaded background grey and the light factor. Barycentrics are recomputed here from the
    // triangle-id image and the vertices' pixel positions (sent as 1/16 px).
    var views = [], total = 0;
    for (var k = 0; k < s.views.length; k++) {
      var sv = s.views[k];
      var fid = await unz(sv.face_id_z, sv.face_dtype);
      var empty = sv.face_dtype === "u2" ? 65535 : 4294967295;
      var count = 0;
      for (var p = 0; p < fid.length; p++) if (fid[p] !== empty) count++;
      views.push({ meta: sv, fid: fid, empty: empty, count: count,
        vxy: await unz(sv.vxy_z, "u2"), shade: await unz(sv.shade_z, "u1"), segs: await unz(sv.segs_z, "u2") });
      total += count;
    }
    var dst = new Int32Array(total), ia = new Int32Array(total), ib = new Int32Array(total), ic = new Int32Array(total);
    var wa = new Float32Array(total), wb = new Float32Array(total), wc = new Float32Array(total);
    var level = new Uint8Array(total), bg = new Uint32Array(total);
    var pixelOwner = new Int32Array(W * H).fill(-1);
    var q = 0;
    views.forEach(function (vw) {
      var m = vw.meta, hemi = hemis[m.hemi], F = hemi.faces, off = hemi.offset, xy = vw.vxy, sh = vw.shade;
      for (var r = 0; r < m.h; r++) {
        for (var c = 0; c < m.w; c++) {
          var f = vw.fid[r * m.w + c];
          if (f === vw.empty) continue;
          var a = F[3 * f], b = F[3 * f + 1], d = F[3 * f + 2];
          var x0 = xy[2 * a] / 16, y0 = xy[2 * a + 1] / 16, x1 = xy[2 * b] / 16, y1 = xy[2 * b + 1] / 16;
          var x2 = xy[2 * d] / 16, y2 = xy[2 * d + 1] / 16, px = c + 0.5, py = r + 0.5;
          var den = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2);
          var l0 = 1 / 3, l1 = 1 / 3;
          if (Math.abs(den) > 1e-12) {
            l0 = ((y1 - y2) * (px - x2) + (x2 - x1) * (py - y2)) / den;
            l1 = ((y2 - y0) * (px - x2) + (x0 - x2) * (py - y2)) / den;
          }
          l0 = Math.min(1, Math.max(0, l0)); l1 = Math.min(1, Math.max(0, l1));
          var l2 = Math.max(0, 1 - l0 - l1), sum = l0 + l1 + l2;
          l0 /= sum; l1 /= sum; l2 /= sum;
          var gi = (m.y + r) * W + (m.x + c);
          dst[q] = gi; pixelOwner[gi] = q;
          ia[q] = a + off; ib[q] = b + off; ic[q] = d + off;
          wa[q] = l0; wb[q] = l1; wc[q] = l2;
          var shade = (l0 * sh[a] + l1 * sh[b] + l2 * sh[d]) / 255;
          var sg = l0 * sulc[a + off] + l1 * sulc[b + off] + l2 * sulc[d + off];
          var gy = Math.round(sg * (0.62 + 0.38 * shade));
          bg[q] = (255 << 24 | gy << 16 | gy << 8 | gy) >>> 0;
          // Data are lit like the surface and keep a faint trace of the sulci underneath.
          var curv = Math.min(1, Math.max(0, (sg - 140) / 80));
          level[q] = Math.round(127 * (0.5 + 0.5 * shade) * (0.86 + 0.14 * curv));
          q++;
        }
      }
    });
    // Colour x light table: 128 light levels keep smooth shading free of visible banding.
    var lut = b64bytes(s.lut), shaded = new Uint32Array(128 * 256);
    for (var lv = 0; lv < 128; lv++) {
      for (var ci = 0; ci < 256; ci++) {
        var R = Math.round(lut[3 * ci] * lv / 127), G = Math.round(lut[3 * ci + 1] * lv / 127), B = Math.round(lut[3 * ci + 2] * lv / 127);
        shaded[(lv << 8) | ci] = (255 << 24 | B << 16 | G << 8 | R) >>> 0;  // little-endian RGBA
      }
    }
    return { s: s, W: W, H: H, hemis: hemis, labels: labels, unitOfVertex: unitOfVertex, vertexOfUnit: vertexOfUnit,
      views: views, dst: dst, ia: ia, ib: ib, ic: ic, wa: wa, wb: wb, wc: wc, level: level, bg: bg, shaded: shaded,
      pixelOwner: pixelOwner, lut: lut, vv: new Float32Array(s.n_total), image: null, img32: null };
  }

  // Canvas pixels per CSS pixel: text is sized for the screen, whatever the canvas resolution.
  function cssScale(canvas) {
    var w = canvas.getBoundingClientRect().width;
    return w > 20 ? canvas.width / w : 1.6;
  }

  function renderSurface(ctx, g, val, meta) {
    var W = g.W, H = g.H, s = g.s;
    if (!g.image) {
      g.image = ctx.createImageData(W, H);
      g.image.data.fill(255);
      g.img32 = new Uint32Array(g.image.data.buffer);
    }
    var img32 = g.img32, vv = g.vv;
    vv.fill(NaN);
    if (val) for (var u = 0; u < val.length; u++) vv[g.vertexOfUnit[u]] = val[u];
    var vmax = meta && meta.vmax > 0 ? meta.vmax : 1, thr = meta && meta.threshold || 0;
    var k127 = 127.5 / vmax, shaded = g.shaded, level = g.level, bg = g.bg, dst = g.dst;
    var ia = g.ia, ib = g.ib, ic = g.ic, wa = g.wa, wb = g.wb, wc = g.wc;
    var n = dst.length, t0 = performance.now();
    for (var q = 0; q < n; q++) {
      var a = vv[ia[q]], b = vv[ib[q]], c = vv[ic[q]];
      var wsum = 0, acc = 0;
      // Interpolate over the corners that have data; a pixel is coloured when they carry at
      // least half of its weight, so data/no-data borders fall half-way along edges.
      if (a === a) { acc += wa[q] * a; wsum += wa[q]; }
      if (b === b) { acc += wb[q] * b; wsum += wb[q]; }
      if (c === c) { acc += wc[q] * c; wsum += wc[q]; }
      if (wsum >= 0.5) {
        var x = acc / wsum;
        if (x >= thr || x <= -thr) {
          var t = (x * k127 + 128) | 0;  // == round(x / vmax * 127.5 + 127.5) for the LUT
          img32[dst[q]] = shaded[(level[q] << 8) | (t < 0 ? 0 : t > 255 ? 255 : t)];
          continue;
        }
      }
      img32[dst[q]] = bg[q];
    }
    var t1 = performance.now();
    ctx.putImageData(g.image, 0, 0);
    var t2 = performance.now();

    var ppm = s.px_per_mm, sc = cssScale(ctx.canvas);
    // Region outlines: smoothed vector contours through the mesh, over the pixels.
    ctx.save();
    ctx.strokeStyle = "rgba(15,15,15,0.9)"; ctx.lineWidth = Math.max(1, 1.1 * sc); ctx.lineCap = "round"; ctx.lineJoin = "round";
    ctx.beginPath();
    g.views.forEach(function (vw) {
      var sg = vw.segs, ox = vw.meta.x, oy = vw.meta.y;
      for (var i = 0; i + 3 < sg.length; i += 4) {
        ctx.moveTo(ox + sg[i] / 16, oy + sg[i + 1] / 16);
        ctx.lineTo(ox + sg[i + 2] / 16, oy + sg[i + 3] / 16);
      }
    });
    ctx.stroke();
    g.timing = { pixels: t1 - t0, put: t2 - t1, outlines: performance.now() - t2 };
    var top = Math.min.apply(null, g.views.map(function (vw) { return vw.meta.y; }));
    var bottom = Math.max.apply(null, g.views.map(function (vw) { return vw.meta.y + vw.meta.h; }));
    // Hemisphere captions in the top corners.
    var font = Math.round(Math.min(12 * sc, 0.45 * top));
    ctx.fillStyle = "#666"; ctx.font = "600 " + font + "px sans-serif"; ctx.textBaseline = "middle";
    ctx.textAlign = "left"; ctx.fillText("L", 0.5 * font, top / 2);
    ctx.textAlign = "right"; ctx.fillText("R", W - 0.5 * font, top / 2);
    ctx.restore();
    drawTitle(ctx, meta && meta.title || "", W * 0.9, top / 2, Math.round(Math.min(13 * sc, 0.5 * top)), W / 2);
    if (val) {
      var room = H - bottom, tf = Math.round(Math.min(11 * sc, 0.3 * room)), cbh = Math.round(Math.min(9 * sc, 0.22 * room));
      drawColorbar(ctx, g.lut, W / 2, bottom + 0.18 * room, Math.min(W * 0.34, 260 * sc), cbh, vmax, meta.cbar_label || "", tf);
    }
  }

  function mountBrain(element, props, watch) {
    var root = element.querySelector(".ctx-brain") || element;
    var canvas = root.querySelector(".ctx-canvas"), ctx = canvas.getContext("2d");
    var tip = root.querySelector(".ctx-tip"), stage = root.querySelector(".ctx-stage");
    var status = root.querySelector(".ctx-status");
    var st = { sid: null, geo: null, pending: null, val: null, meta: null };
    function setStatus(t) { if (status) status.textContent = t; }

    function draw() {
      if (!st.geo) return;
      var t0 = performance.now();
      renderSurface(ctx, st.geo, st.val, st.meta);
      root.dataset.renderMs = (performance.now() - t0).toFixed(1);
      root.dataset.timing = JSON.stringify(st.geo.timing);
      root.dataset.renders = String((+root.dataset.renders || 0) + 1);
    }

    function showValue(v) {
      if (v.clear) { st.val = null; st.meta = { title: v.title || "" }; setStatus(v.title || ""); draw(); return; }
      if (!st.geo) { st.pending = v; setStatus("loading surface\u2026"); return; }
      if (v.n !== st.geo.s.n_units) {
        st.pending = v;
        setStatus("values (" + v.n + ") do not match this unit space (" + st.geo.s.n_units + ")");
        return;
      }
      st.pending = null;
      st.val = values16(v.v); st.meta = v;
      setStatus("");
      draw();
    }

    // Built geometries by sid: going back to a dataset already seen skips the rebuild.
    var built = new Map();
    function showStatic(s) {
      st.sid = s.sid; st.geo = null; st.val = null;
      setStatus("loading surface\u2026");
      root.dataset.sid = "";
      var t0 = performance.now();
      var job = built.get(s.sid) || buildSurface(s);
      built.delete(s.sid); built.set(s.sid, job);
      while (built.size > 3) built.delete(built.keys().next().value);
      job.then(function (g) {
        if (st.sid !== s.sid) return;
        if (canvas.width !== g.W || canvas.height !== g.H) { canvas.width = g.W; canvas.height = g.H; }
        st.geo = g;
        root.dataset.sid = s.sid;
        root.dataset.buildMs = (performance.now() - t0).toFixed(0);
        setStatus("");
        if (st.pending) showValue(st.pending); else draw();
      }).catch(function (e) { built.delete(s.sid); console.error("Cortextual brain panel:", e); setStatus("could not draw the surface: " + e); });
    }

    canvas.addEventListener("mousemove", function (ev) {
      var g = st.geo;
      if (!g) return placeTip(tip, stage, ev, "");
      var p = canvasPoint(canvas, ev), x = Math.floor(p[0]), y = Math.floor(p[1]);
      var q = x >= 0 && y >= 0 && x < g.W && y < g.H ? g.pixelOwner[y * g.W + x] : -1;
      if (q < 0) return placeTip(tip, stage, ev, "");
      var v = g.wa[q] >= g.wb[q] && g.wa[q] >= g.wc[q] ? g.ia[q] : g.wb[q] >= g.wc[q] ? g.ib[q] : g.ic[q];
      var hemi = v < g.s.n_lh ? "lh" : "rh", local = hemi === "lh" ? v : v - g.s.n_lh;
      var region = g.s.roi_names[g.labels[v]] || "";
      var u = g.unitOfVertex[v];
      var value = u >= 0 && st.val ? st.val[u] : NaN;
      var html = "<b>" + hemi + "</b> vertex " + local + " <span style='opacity:.7'>(#" + v + ")</span>";
      if (g.labels[v] > 0) html += "<br>" + esc(region);
      html += "<br>" + (u < 0 ? "no data here" : value === value ? "value " + fmt(value) : "no value");
      placeTip(tip, stage, ev, html);
    });
    canvas.addEventListener("mouseleave", function () { tip.hidden = true; });
    setupPng(root, canvas, function () { return (st.meta && st.meta.title) || "brain"; });
    watchSize(canvas, draw);
    bindProps(root, props, watch, showStatic, showValue);
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
    var W = s.width || 900, margin = 0.11 * W, top = 0.1 * W, bottom = 0.17 * W;
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
    g.lut = b64bytes(s.lut);
    return g;
  }

  function renderNeurons(ctx, g, val, meta) {
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
    var n = g.x.length, vmax = meta && meta.vmax > 0 ? meta.vmax : 1, lut = g.lut, r = g.radius;
    // Strongest responses last, so they stay visible where dots overlap.
    var order = new Uint32Array(n);
    for (var i = 0; i < n; i++) order[i] = i;
    if (val) {
      var key = new Float32Array(n);
      for (var j = 0; j < n; j++) key[j] = val[j] === val[j] ? Math.abs(val[j]) : -1;
      order.sort(function (a, b) { return key[a] - key[b]; });
    }
    ctx.lineWidth = Math.max(0.6, r / 5);
    for (var t = 0; t < n; t++) {
      var k = order[t], x = g.cx[k], y = g.cy[k];
      if (!(x === x && y === y)) continue;
      var v = val ? val[k] : NaN;
      ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
      if (v === v) {
        var c = 3 * lutIndex(v, vmax);
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
    drawTitle(ctx, meta && meta.title || "", W * 0.9, g.top * 0.3, Math.round(Math.min(13 * sc, 0.35 * g.top)), W / 2);
    if (val) drawColorbar(ctx, lut, W / 2, H - g.bottom * 0.5, Math.min(W * 0.34, 260 * sc), Math.round(Math.min(9 * sc, 0.2 * g.bottom)), vmax, meta.cbar_label || "", Math.round(Math.min(11 * sc, 0.28 * g.bottom)));
  }

  function mountMouse(element, props, watch) {
    var root = element.querySelector(".ctx-mouse") || element;
    var canvas = root.querySelector(".ctx-canvas"), ctx = canvas.getContext("2d");
    var tip = root.querySelector(".ctx-tip"), stage = root.querySelector(".ctx-stage");
    var status = root.querySelector(".ctx-status");
    var st = { sid: null, geo: null, pending: null, val: null, meta: null };
    function setStatus(t) { if (status) status.textContent = t; }
    function draw() {
      if (!st.geo) return;
      var t0 = performance.now();
      renderNeurons(ctx, st.geo, st.val, st.meta);
      root.dataset.renderMs = (performance.now() - t0).toFixed(1);
      root.dataset.renders = String((+root.dataset.renders || 0) + 1);
    }
    function showValue(v) {
      if (v.clear) { st.val = null; st.meta = { title: v.title || "" }; setStatus(v.title || ""); draw(); return; }
      if (!st.geo) { st.pending = v; setStatus("loading area map\u2026"); return; }
      if (v.n !== st.geo.s.n_units) {
        st.pending = v;
        setStatus("values (" + v.n + ") do not match this unit space (" + st.geo.s.n_units + ")");
        return;
      }
      st.pending = null; st.val = values16(v.v); st.meta = v; setStatus(""); draw();
    }
    function showStatic(s) {
      st.sid = s.sid; st.geo = null; st.val = null; root.dataset.sid = "";
      setStatus("loading area map\u2026");
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
      html += "<br>" + (value === value ? "value " + fmt(value) : "no value");
      placeTip(tip, stage, ev, html);
    });
    canvas.addEventListener("mouseleave", function () { tip.hidden = true; });
    setupPng(root, canvas, function () { return (st.meta && st.meta.title) || "neurons"; });
    watchSize(canvas, draw);
    bindProps(root, props, watch, showStatic, showValue);
  }

  window.CortextualPanels = { mountBrain: mountBrain, mountMouse: mountMouse, _decode: { b64bytes: b64bytes, values16: values16 } };
})();

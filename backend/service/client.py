"""The viewer's only way into the backend: typed calls over HTTP.

Every call returns plain Python and numpy values or raises :class:`BackendError` carrying the
backend's one-line explanation (:class:`BackendUnavailable` when nothing answers at all).

Two transports, one interface: a URL (the backend process ``launch.py`` spawns, or one elsewhere),
or :meth:`BackendClient.in_process` over an ASGI app in this process (Spaces mode: ZeroGPU gives a
GPU only to the main process, so there is no second server and no loopback hop; requests still
pass through the same routes, validation and error handlers).
"""

from __future__ import annotations

import numpy as np
import httpx

from backend.service.wire import DTYPE_HEADER, SHAPE_HEADER, array_from_bytes, decode_array


class BackendError(RuntimeError):
    """The backend answered with an error; ``str(err)`` is its one-line explanation."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BackendUnavailable(BackendError):
    """Nothing answered at the backend's address (not started yet, restarting, or gone)."""


class BackendClient:
    def __init__(self, base_url: str = "http://127.0.0.1:7861", timeout: float = 30.0, http: httpx.Client | None = None) -> None:
        """``http``: an httpx.Client to send through instead of a new one (e.g. an in-process
        transport, see :meth:`in_process`); ``base_url`` then only names it in messages."""
        self.base_url = base_url.rstrip("/")
        self._http = http if http is not None else httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False)

    @classmethod
    def in_process(cls, app) -> BackendClient:
        """A client of the ASGI ``app`` (the backend's FastAPI app) running in this process.

        Starlette's TestClient is an httpx.Client whose transport calls the app directly (about
        2 ms a request here, no socket). It is entered once so one event-loop thread serves every
        request; server errors come back as 500 responses, as over HTTP. The caller's context
        variables reach the routes (Gradio's request context, which ZeroGPU reads).
        """
        from starlette.testclient import TestClient

        http = TestClient(app, base_url="http://in-process", raise_server_exceptions=False)
        http.__enter__()
        client = cls("in-process://backend", http=http)
        client._entered = True
        return client

    _entered = False

    def close(self) -> None:
        if self._entered:  # leave the TestClient's event-loop thread
            self._http.__exit__(None, None, None)
            self._entered = False
        else:
            self._http.close()

    # -- plumbing ------------------------------------------------------------------------------
    def _get(self, path: str, **params) -> httpx.Response:
        return self._send("GET", path, params={k: v for k, v in params.items() if v is not None})

    def _post(self, path: str, body: dict | None = None) -> dict:
        return self._send("POST", path, json=body or {}).json()

    def _send(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as err:
            raise BackendUnavailable(f"the backend at {self.base_url} is not answering ({type(err).__name__})") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            if isinstance(detail, list):  # FastAPI validation errors
                detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
            raise BackendError(str(detail).splitlines()[0] if detail else f"HTTP {response.status_code}", response.status_code)
        return response

    def _json(self, path: str, **params):
        return self._get(path, **params).json()

    def _array(self, path: str, **params) -> np.ndarray:
        response = self._get(path, **params)
        return array_from_bytes(response.content, response.headers[DTYPE_HEADER], response.headers[SHAPE_HEADER])

    # -- the API -------------------------------------------------------------------------------
    def health(self) -> dict:
        return self._json("/api/health")

    def datasets(self) -> list[dict]:
        return self._json("/api/datasets")

    def dataset(self, dataset_id: str) -> dict:
        return self._json(f"/api/datasets/{dataset_id}")

    def stimuli(self, dataset_id: str, query: str = "", split: str | None = None, offset: int = 0, limit: int = 48) -> dict:
        """{"total": n, "offset": k, "items": [{"index", "id", "caption", "category", "split"}, ...]}"""
        return self._json(f"/api/datasets/{dataset_id}/stimuli", q=query, split=split, offset=offset, limit=limit)

    def stimulus(self, dataset_id: str, index: int) -> dict:
        return self._json(f"/api/datasets/{dataset_id}/stimuli/{index}")

    def stimulus_image(self, dataset_id: str, index: int, size: int = 0) -> bytes:
        """PNG bytes, scaled so the longer side is ``size`` pixels (0: as stored)."""
        return self._get(f"/api/datasets/{dataset_id}/stimuli/{index}/image", size=size).content

    def responses(self, dataset_id: str, index: int) -> np.ndarray:
        """float32 [n_units]: the stimulus's response of every unit."""
        return self._array(f"/api/datasets/{dataset_id}/stimuli/{index}/responses")

    def switch(
        self, dataset_id: str, index: int, size: int = 320, model: str | None = None, seed: int = 0,
        embedder: str | None = None, decoded_corpus: str | None = None, images: bool = True,
    ) -> dict:
        """Everything a stimulus switch shows, in one request: {stimulus (metadata), image (PNG
        bytes), responses float32 [n_units] (sent as float16), captions {source: text | None},
        captioners [{id, label, simulated}], decoded dict | None, generated dict | None,
        reconstructions [{source, caption, key, present, image: PNG bytes | None}] (for the
        text-to-image ``model``; none without one)}."""
        import base64

        payload = self._json(
            f"/api/datasets/{dataset_id}/stimuli/{index}/switch", size=size, model=model, seed=seed, embedder=embedder,
            decoded_corpus=decoded_corpus, images=None if images else "false",
        )
        payload["image"] = base64.b64decode(payload["image"])
        payload["responses"] = decode_array(payload["responses"]).astype(np.float32)
        for entry in payload["reconstructions"]:
            entry["image"] = base64.b64decode(entry["image"]) if entry.get("image") else None
        return payload

    def captions(self, dataset_id: str, index: int) -> dict[str, str | None]:
        """captioner id -> caption ("reference" first)."""
        return self._json(f"/api/datasets/{dataset_id}/stimuli/{index}/captions")["captions"]

    def unit_space(self, dataset_id: str) -> dict:
        """Surface: {kind, mesh, roi_names, roi_labels int16 [n], vertices int64 [n] | None}.
        Neurons: {kind, areas, cell_types, area_outlines {area: float32 [k, 2]}, area, x, y, depth, cell_type}."""
        payload = self._json(f"/api/datasets/{dataset_id}/space")
        arrays = {name: decode_array(a) for name, a in payload.pop("arrays").items()}
        payload.update(arrays)
        if payload["kind"] == "surface":
            payload.setdefault("vertices", None)
        else:
            payload["area_outlines"] = {k: np.asarray(v, np.float32) for k, v in payload["area_outlines"].items()}
        return payload

    def surface_geometry(self, mesh: str = "fsaverage5", kind: str = "inflated") -> dict:
        """{"lh": {"coords": float32 [n, 3], "faces": int32 [m, 3], "sulc": float32 [n]}, "rh": {...}}"""
        payload = self._json(f"/api/surfaces/{mesh}", kind=kind)
        return {
            hemi: {name: decode_array(a) for name, a in parts.items()} for hemi, parts in payload["hemispheres"].items()
        }

    def truth(self, dataset_id: str) -> dict[str, str]:
        """Planted map name -> description (empty for real data)."""
        return self._json(f"/api/datasets/{dataset_id}/truth")["maps"]

    def truth_map(self, dataset_id: str, name: str) -> np.ndarray:
        return self._array(f"/api/datasets/{dataset_id}/truth/{name}")

    def noise_ceiling(self, dataset_id: str) -> np.ndarray:
        return self._array(f"/api/datasets/{dataset_id}/noise-ceiling")

    # -- models, jobs and their outputs ----------------------------------------------------------
    def models(self, kind: str | None = None) -> list[dict]:
        """Registered models: spec fields plus "present" (weights here) and "pull" (the command)."""
        return self._json("/api/models", kind=kind)

    def captioners(self, dataset_id: str) -> list[dict]:
        """Caption sources of a dataset ({id, label, simulated}), the reference first."""
        return self._json(f"/api/datasets/{dataset_id}/captioners")

    def caption(self, dataset_id: str, model: str, **params) -> dict:
        """Start captioning every stimulus; returns the job (see :meth:`job`)."""
        return self._post("/api/jobs/caption", {"dataset": dataset_id, "model": model, "params": params})

    def embed_captions(self, dataset_id: str, model: str, source: str = "reference") -> dict:
        return self._post("/api/jobs/embed-captions", {"dataset": dataset_id, "model": model, "source": source})

    def embed_images(self, dataset_id: str, model: str) -> dict:
        return self._post("/api/jobs/embed-images", {"dataset": dataset_id, "model": model})

    def generate_images(
        self, dataset_id: str, model: str, sources: list[str], stimuli: list[int] | None = None, seed: int = 0,
        with_decoded: bool = False, decoded_corpus: str | None = None,
    ) -> dict:
        """Start generating images from the stimuli's captions (and, ``with_decoded``, from the
        captions decoded from the brain where a decoding of the reference captions exists, from
        the user corpus ``decoded_corpus`` if given)."""
        body = {"dataset": dataset_id, "model": model, "sources": sources, "stimuli": stimuli, "seed": seed,
                "with_decoded": with_decoded, "decoded_corpus": decoded_corpus}
        return self._post("/api/jobs/generate-images", body)

    def encode(self, dataset_id: str, source: str = "reference", embedder: str = "sentence-transformers/all-MiniLM-L6-v2") -> dict:
        """Start fitting the encoding model of ``source`` captions embedded by ``embedder``."""
        return self._post("/api/jobs/encode", {"dataset": dataset_id, "source": source, "embedder": embedder})

    def decode(
        self, dataset_id: str, source: str = "reference", embedder: str = "sentence-transformers/all-MiniLM-L6-v2",
        corpus: list[str] | None = None,
    ) -> dict:
        """Start decoding captions from the brain for the test stimuli (a job), retrieving from the
        training captions or from ``corpus`` (blank lines dropped: the API takes captions with
        words); the result's corpus_id names a user corpus."""
        if corpus is not None:
            corpus = [line for line in corpus if line.strip()]
        return self._post("/api/jobs/decode", {"dataset": dataset_id, "source": source, "embedder": embedder, "corpus": corpus})

    def decoded(
        self, dataset_id: str, index: int, source: str = "reference", embedder: str = "sentence-transformers/all-MiniLM-L6-v2",
        corpus: str | None = None,
    ) -> dict:
        """{"caption", "similarity", "corpus"} decoded from the brain for a test stimulus (BackendError 404 if none);
        ``corpus``: a user corpus's id, default the training captions."""
        return self._json(f"/api/datasets/{dataset_id}/stimuli/{index}/decoded", source=source, embedder=embedder, corpus=corpus)

    def encoding_map(self, dataset_id: str, source: str, embedder: str, part: str = "r") -> np.ndarray:
        """float32 [n_units]: a fitted encoding model's map (r, fraction_of_ceiling, alpha, cv_score)."""
        return self._array(f"/api/datasets/{dataset_id}/encoding", source=source, embedder=embedder, part=part)

    def controls(self, dataset_id: str, source: str = "reference", embedder: str = "sentence-transformers/all-MiniLM-L6-v2") -> dict:
        """Start comparing full-caption encoding with word-level controls (a job)."""
        return self._post("/api/jobs/controls", {"dataset": dataset_id, "source": source, "embedder": embedder})

    def control_difference(self, dataset_id: str, control: str, source: str, embedder: str) -> np.ndarray:
        """float32 [n_units]: r of the full caption minus r of the control (BackendError 404 if not run)."""
        return self._array(f"/api/datasets/{dataset_id}/controls/difference", control=control, source=source, embedder=embedder)

    def rdms(self, dataset_id: str, region: str, source: str, embedder: str, n: int = 100) -> dict:
        """{"stimuli", "brain", "model" (n x n lists), "spearman"}: a region's RDM beside a caption model's."""
        return self._json(f"/api/datasets/{dataset_id}/rdms", region=region, source=source, embedder=embedder, n=n)

    def compare_captioners(
        self, dataset_id: str, embedder: str, text_to_image: str, sources: list[str] | None = None, image_embedder: str | None = None
    ) -> dict:
        """Start comparing caption sources (a job whose result has one row per source); the image
        embedder of the embedding 2-way score defaults to the backend's choice."""
        body = {"dataset": dataset_id, "embedder": embedder, "text_to_image": text_to_image, "sources": sources, "image_embedder": image_embedder}
        return self._post("/api/jobs/compare-captioners", body)

    def rsa(self, dataset_id: str, embedder: str, sources: list[str] | None = None) -> dict:
        """Start the RSA job (result rows: region, source, mean, sd of the RDM correlation)."""
        return self._post("/api/jobs/rsa", {"dataset": dataset_id, "embedder": embedder, "sources": sources})

    def text_to_brain(
        self, dataset_id: str, text: str, source: str = "reference", embedder: str = "sentence-transformers/all-MiniLM-L6-v2"
    ) -> np.ndarray:
        """float32 [n_units]: the response the fitted encoding model predicts for ``text``."""
        response = self._send(
            "POST", f"/api/datasets/{dataset_id}/text-to-brain", json={"text": text, "source": source, "embedder": embedder}
        )
        return array_from_bytes(response.content, response.headers[DTYPE_HEADER], response.headers[SHAPE_HEADER])

    def job(self, job_id: str) -> dict:
        """{id, kind, state (queued/running/done/failed/cancelled), done, total, fraction, message, error, result}"""
        return self._json(f"/api/jobs/{job_id}")

    def jobs(self) -> list[dict]:
        return self._json("/api/jobs")

    def cancel_job(self, job_id: str) -> dict:
        return self._post(f"/api/jobs/{job_id}/cancel")

    def reconstructions(self, dataset_id: str, index: int, model: str, seed: int = 0, decoded_corpus: str | None = None) -> list[dict]:
        """[{source, caption, key, present}] for each caption source of the stimulus, and for the
        caption decoded from the brain (source "decoded from the brain") once a decoding has run."""
        return self._json(
            f"/api/datasets/{dataset_id}/stimuli/{index}/reconstructions", model=model, seed=seed, decoded_corpus=decoded_corpus
        )

    def output_image(self, key: str) -> bytes:
        """PNG bytes of a generated image."""
        return self._get(f"/api/outputs/images/{key}").content

    # -- manifolds -----------------------------------------------------------------------------
    def compute_manifolds(
        self, dataset_id: str, source: str = "reference", embedder: str = "sentence-transformers/all-MiniLM-L6-v2", region: str | None = None
    ) -> dict:
        """Start the manifolds job (UMAP of the brain responses and of the caption embeddings)."""
        body = {"dataset": dataset_id, "source": source, "embedder": embedder, "region": region or None}
        return self._post("/api/jobs/manifolds", body)

    def manifolds(
        self, dataset_id: str, source: str = "reference", embedder: str = "sentence-transformers/all-MiniLM-L6-v2", region: str | None = None
    ) -> dict:
        """The cached maps (BackendError 404 if the job has not run): {dataset, source, embedder,
        region, n_units, indices int32 [n], brain float32 [n, 2], text float32 [n, 2] (aligned onto
        brain), categories / groups: list[str | None] [n] or None, trustworthiness {brain, text},
        shared_neighbours, chance, params}."""
        payload = self._json(f"/api/datasets/{dataset_id}/manifolds", source=source, embedder=embedder, region=region or None)
        for key in ("indices", "brain", "text"):
            payload[key] = decode_array(payload[key])
        for key in ("categories", "groups"):
            coded = payload.get(key)
            if coded is not None:
                names = coded["names"]
                payload[key] = [names[c] if c >= 0 else None for c in decode_array(coded["codes"]).tolist()]
        return payload

    def manifold_regions(self, dataset_id: str) -> list[dict]:
        """[{name, units}]: the regions (ROIs or areas) a brain map can be drawn from."""
        return self._json(f"/api/datasets/{dataset_id}/manifolds/regions")

    # -- captions generated from the brain (frozen language model) ------------------------------
    def brain_captions_job(self, dataset_id: str, **params) -> dict:
        """Start training the prefix decoder and captioning the test stimuli from the brain.
        ``params``: source, embedder, language_model, inputs ("captions" | "captions+brain"),
        steps, align_steps, num_beams, candidates, max_new_tokens, seed (the API's defaults otherwise)."""
        return self._post("/api/jobs/brain-captions", {"dataset": dataset_id, **params})

    def brain_captions(self, dataset_id: str, **params) -> dict:
        """The metric table (retrieval where a decode job ran, generated from the brain, ceiling)
        and training facts of a finished brain-captions job with these ``params`` (404 if none)."""
        return self._json(f"/api/datasets/{dataset_id}/brain-captions", **params)

    def brain_caption_rows(self, dataset_id: str, limit: int = 50, **params) -> list[dict]:
        """[{index, reference, retrieved, generated, ceiling, similarity, ceiling_similarity}] per test stimulus."""
        return self._json(f"/api/datasets/{dataset_id}/brain-captions/stimuli", limit=limit, **params)

    def brain_caption(self, dataset_id: str, index: int, **params) -> dict:
        """{index, language_model, generated, ceiling, similarity, ceiling_similarity} for a test stimulus."""
        return self._json(f"/api/datasets/{dataset_id}/stimuli/{index}/brain-caption", **params)

    def brain_captions_brainhub(self, dataset_id: str, which: str = "generated", **params) -> dict[str, str]:
        """{"0": caption, ...} per test stimulus in BrainHub's candidate format (eval_caption.py)."""
        return self._json(f"/api/datasets/{dataset_id}/brain-captions/brainhub", which=which, **params)

    def brain_qformer_job(self, dataset_id: str, **params) -> dict:
        """Start training the Brain Q-Former and captioning the test stimuli from their responses.
        ``params``: source, embedder, language_model, steps, pretrain_steps, num_beams, max_new_tokens, seed."""
        return self._post("/api/jobs/brain-qformer", {"dataset": dataset_id, **params})

    def brain_qformer(self, dataset_id: str, **params) -> dict:
        """Metrics, training facts and per-stimulus captions of a finished Q-Former job (404 if none)."""
        return self._json(f"/api/datasets/{dataset_id}/brain-qformer", **params)

    # -- visual encoders aligned to language -------------------------------------------------
    def visual_encoders_job(self, dataset_id: str, **params) -> dict:
        """Start training and comparing the visual encoders. ``params``: networks, source, embedder,
        backbone, objective, input_size, epochs, alignment_weight, seed (the API's defaults otherwise)."""
        return self._post("/api/jobs/visual-encoders", {"dataset": dataset_id, **params})

    def visual_encoder_comparison(self, comparison_id: str) -> dict:
        """Per-region encoding r and RSA of each network of a finished comparison (404 if none)."""
        return self._json(f"/api/visual-encoders/{comparison_id}")

    def visual_encoder_difference_map(self, comparison_id: str, layer: str) -> np.ndarray:
        """float32 [n_units]: encoding r of the language-trained minus the category-trained network."""
        return self._array(f"/api/visual-encoders/{comparison_id}/difference-map", layer=layer)

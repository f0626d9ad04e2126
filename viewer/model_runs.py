"""Running models from the page: caption, embed and reconstruct as backend jobs with a progress bar,
and the reconstruction strip (images generated from each caption of the selected stimulus)."""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from backend.service.client import BackendClient, BackendError, BackendUnavailable

POLL_S = 0.25
#: How long to wait for a backend that stopped answering mid-job (the launcher restarts it).
RESTART_WAIT_S = 180.0
FALLBACK_TEXT_TO_IMAGE = "sim-scene-renderer"
MAX_CORPUS_UPLOAD = 20_000_000  # bytes: about 200,000 captions


def model_choices(client: BackendClient, kind: str) -> list[tuple[str, str]]:
    """(label, id) for every model of ``kind``, saying which are simulated or not downloaded."""
    choices = []
    for m in client.models(kind):
        state = " · simulated" if m["simulated"] else ("" if m["present"] else " · not downloaded")
        choices.append((f"{m['label']}{state}", m["id"]))
    return choices


def usable_default(client: BackendClient, kind: str) -> str | None:
    """The first model of ``kind`` whose weights are here (simulated ones count): a default
    that works. None when no model of the kind can run here (nothing is preselected)."""
    present = [m["id"] for m in client.models(kind) if m["present"] or m["simulated"]]
    return present[0] if present else None


def default_text_to_image(client: BackendClient) -> str:
    """The first text-to-image model whose weights are here, else the demo world's renderer."""
    present = [m["id"] for m in client.models("text_to_image") if m["present"] and not m["simulated"]]
    return present[0] if present else FALLBACK_TEXT_TO_IMAGE


_following = {"n": 0}
_following_lock = threading.Lock()


def jobs_followed() -> int:
    """How many jobs this page's handlers are following now (any visitor)."""
    return _following["n"]


def announce(label: str) -> Callable[[], str]:
    """A handler for the moment a job button is pressed (run unqueued, before the job's own
    handler): the status says the job starts, or that it waits behind the running ones, so a
    click on a busy button never vanishes and an old result never stays under the new progress."""

    def status() -> str:
        busy = jobs_followed()
        if busy:
            return f"⏳ **{label}**: queued behind {busy} running job{'s' if busy > 1 else ''}; it starts when they finish."
        return f"⏳ **{label}**: starting…"

    return status


def follow_job(client: BackendClient, start: Callable[[], dict], progress: gr.Progress) -> dict:
    """Start a job with ``start()`` and poll it to its end, mirroring its progress on the page's
    progress bar. If the backend restarts meanwhile (the launcher restarts one that died), the
    job is started again, once: what its stages had stored is read back, not recomputed. The
    returned job says ``"restarted": True`` then."""
    with _following_lock:
        _following["n"] += 1
    try:
        return _follow(client, start, progress)
    finally:
        with _following_lock:
            _following["n"] -= 1


def _follow(client: BackendClient, start: Callable[[], dict], progress: gr.Progress) -> dict:
    job, restarted = start(), False
    while True:
        while job["state"] in ("queued", "running"):
            waiting = job["state"] == "queued" and not job["message"]
            progress(job["fraction"], desc=f"{job['kind']}: queued in the backend behind other jobs" if waiting
                     else job["message"] or f"{job['kind']} ({job['state']})")
            time.sleep(POLL_S)
            job = _poll(client, job, progress)
        if job["state"] != "interrupted" or restarted:
            return {**job, "restarted": restarted}
        progress(0.0, desc="the backend restarted; running the job again (finished items come from the cache)")
        job, restarted = start(), True


def _poll(client: BackendClient, job: dict, progress: gr.Progress) -> dict:
    """The job's state now, waiting through a backend restart (then it is ``interrupted``)."""
    deadline = time.monotonic() + RESTART_WAIT_S
    while True:
        try:
            return client.job(job["id"])
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            progress(job["fraction"], desc="the backend stopped answering; waiting for it to restart")
            time.sleep(1.0)
        except BackendError as err:
            if err.status != 404:
                raise
            # A backend without this job's record (another cache): the job is gone all the same.
            return {**job, "state": "interrupted", "message": "the backend restarted and no longer knows this job"}


def job_summary(job: dict) -> str:
    took = f" in {job['elapsed_s']:.1f} s" if job.get("elapsed_s") is not None else ""
    again = " (run again after the backend restarted)" if job.get("restarted") else ""
    if job["state"] == "done":
        result = ", ".join(f"{k}: {v}" for k, v in (job["result"] or {}).items() if not k.endswith("_id"))  # ids are for code
        return f"✅ **{job['kind']}** finished{took}{again} — {result}"
    if job["state"] == "cancelled":
        return f"⏹ **{job['kind']}** cancelled — {job['message']}"
    if job["state"] == "interrupted":
        return f"⚠️ **{job['kind']}** interrupted — {job['message']}; press the button again to continue"
    return f"❌ **{job['kind']}** failed{again} — {job['error']}"


def reconstruction_items(
    client: BackendClient, dataset_id: str, index: int, model: str | None, decoded_corpus: str | None = None
) -> list[tuple]:
    """Gallery items: the stimulus, then each caption's generated image that exists for ``model``
    (the caption decoded from the brain included, retrieved from ``decoded_corpus`` if given);
    one backend request (the switch read)."""
    return items_from_switch(client.switch(dataset_id, index, size=256, model=model or None, decoded_corpus=decoded_corpus))


def items_from_switch(payload: dict) -> list[tuple]:
    """Gallery items from a switch payload: the stimulus, then each reconstruction that exists."""
    items = [(_image(payload["image"]), "stimulus")]
    for entry in payload["reconstructions"]:
        if entry["present"] and entry.get("image"):
            items.append((_image(entry["image"]), f"{entry['source']}: {entry['caption']}"))
    return items


def brain_reconstruction(payload: dict, model: str | None = None):
    """gr.update of the "from the brain" image beside the stimulus: the first existing image drawn
    from a caption read out of the brain (decoded, or generated where the backend lists it), or a
    label saying what to run."""
    for entry in payload["reconstructions"]:
        if "brain" in entry["source"] and entry["present"] and entry.get("image"):
            return gr.update(value=_image(entry["image"]), label=f"From the brain ({entry['source']}): {entry['caption']}")
    split = payload["stimulus"]["split"]
    if split != "test":
        why = "reconstructions from the brain are made for test stimuli"
    elif not model:
        why = "choose a text-to-image model under Run models"
    elif not any("brain" in e["source"] for e in payload["reconstructions"]):
        why = "decode captions from the brain (Run models)"
    else:
        why = "not drawn yet: Reconstruct (Run models)"
    return gr.update(value=None, label=f"From the brain: {why}")


def _image(png: bytes) -> str:
    return png_path(png)


#: Where the viewer keeps the PNGs it shows (under the temp folder, which Gradio serves from).
PNG_DIR = Path(tempfile.gettempdir()) / "cortextual-viewer-png"


def png_path(png: bytes) -> str:
    """A file holding these PNG bytes (named by their hash, written once), for gr.Image and
    gr.Gallery: Gradio copies a file as it is, while a PIL image is encoded to PNG again on every
    switch (about 70 ms an image on a loaded 2-core machine, against about 1 ms)."""
    path = PNG_DIR / f"{hashlib.sha1(png).hexdigest()}.png"
    if not path.exists():
        PNG_DIR.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{threading.get_ident()}.tmp")
        partial.write_bytes(png)
        partial.replace(path)  # atomic: a concurrent reader never sees half a file
    return str(path)


def read_corpus_upload(path: str | None) -> list[str] | None:
    """The lines of an uploaded caption corpus (UTF-8 text, one caption per line), or None for
    no upload; gr.Error in one line for a file too large or not text (the backend checks the rest)."""
    if not path:
        return None
    size = Path(path).stat().st_size
    if size > MAX_CORPUS_UPLOAD:
        raise gr.Error(f"the caption corpus has {size / 1e6:.1f} MB; at most {MAX_CORPUS_UPLOAD / 1e6:.0f} MB")
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise gr.Error(f"the caption corpus is not UTF-8 text (byte {err.start}); expected one caption per line") from None
    if "\x00" in text:
        raise gr.Error("the caption corpus holds binary data; expected one caption per line")
    return text.splitlines()


class ModelRuns:
    """The "Run models" accordion; create inside a Blocks context, then :meth:`wire`."""

    def __init__(self, client: BackendClient, corpora: dict[str, str | None] | None = None) -> None:
        self.client = client
        #: dataset -> the user corpus id of the latest decoding run from this page (None: training captions)
        self.corpora = corpora if corpora is not None else {}
        try:
            captioners = model_choices(client, "captioner")
            embedders = model_choices(client, "text_embedder")
            generators = model_choices(client, "text_to_image")
            generator = default_text_to_image(client)
            # preselect only models that can run here (not a captioner whose weights are absent)
            captioner, embedder = usable_default(client, "captioner"), usable_default(client, "text_embedder")
        except BackendError:
            captioners, embedders, generators, generator, captioner, embedder = [], [], [], None, None, None
        with gr.Accordion("Run models (captioners, text embedders, text-to-image)", open=False, elem_id="ctx-runs"):
            gr.Markdown(
                "Jobs run in the backend, one at a time, and are cached: a second run is read from disk. "
                "Models marked *not downloaded* need `python launch.py models pull ID` on a machine with internet."
            )
            with gr.Row():
                self.captioner = gr.Dropdown(captioners, value=captioner, label="Captioner", scale=3, elem_id="ctx-captioner")
                self.caption_button = gr.Button("Caption every stimulus", scale=1, elem_id="ctx-caption-run")
            with gr.Row():
                self.embedder = gr.Dropdown(embedders, value=embedder, label="Text embedder", scale=2, elem_id="ctx-embedder")
                self.source = gr.Dropdown(["reference"], value="reference", label="Captions to embed", scale=1, elem_id="ctx-embed-source")
                self.embed_button = gr.Button("Embed captions", scale=1, elem_id="ctx-embed-run")
                self.decode_button = gr.Button("Decode captions from the brain", scale=1, elem_id="ctx-decode-run")
            self.corpus_file = gr.File(
                label="Caption corpus to decode into (optional: a .txt file, one caption per line; default: the training captions)",
                file_types=[".txt"], type="filepath", height=90, elem_id="ctx-corpus",
            )
            with gr.Row():
                self.generator = gr.Dropdown(generators, value=generator, label="Text-to-image", scale=3, elem_id="ctx-generator")
                self.generate_button = gr.Button("Reconstruct this stimulus", scale=1, elem_id="ctx-generate-run")
                self.generate_test_button = gr.Button("… every test stimulus", scale=1, elem_id="ctx-generate-test")
            with gr.Row():
                self.status = gr.Markdown(elem_id="ctx-job-status")
                self.cancel_button = gr.Button("Cancel running jobs", size="sm", variant="stop", scale=0, elem_id="ctx-cancel")
        # Placed by the page (beside the stimulus): rendered where the page calls .render().
        self.reconstructions = gr.Gallery(
            label="Reconstructions: images generated from each caption (stimulus first)",
            columns=6,
            height=150,
            allow_preview=True,
            object_fit="contain",
            elem_id="ctx-reconstructions",
            render=False,
        )

    def sources(self, dataset_id: str) -> list[tuple[str, str]]:
        return [(c["label"], c["id"]) for c in self.client.captioners(dataset_id)]

    def wire(self, dataset_state, stimulus_state, captions_html, refresh_captions, from_brain=None) -> None:
        """Connect the buttons. ``refresh_captions(ds, index) -> html`` redraws the captions panel;
        ``from_brain``: the page's image of the reconstruction from the brain, refreshed with the strip."""
        client = self.client

        def run(start, progress=gr.Progress()):
            try:
                job = follow_job(client, start, progress)
            except BackendError as err:
                raise gr.Error(str(err)) from None
            return job_summary(job)

        def caption(ds, model, progress=gr.Progress()):
            return run(lambda: client.caption(ds, model), progress)

        def embed(ds, model, source, progress=gr.Progress()):
            return run(lambda: client.embed_captions(ds, model, source), progress)

        def decode(ds, model, source, corpus_path, progress=gr.Progress()):
            corpus = read_corpus_upload(corpus_path)
            try:
                job = follow_job(client, lambda: client.decode(ds, source, model, corpus=corpus), progress)
            except BackendError as err:
                raise gr.Error(str(err)) from None
            if job["state"] == "done" and source == "reference":
                self.corpora[ds] = job["result"].get("corpus_id")
            return job_summary(job)

        def sources_of(ds):
            return [s for _, s in self.sources(ds)]

        def generate(ds, model, index, progress=gr.Progress()):
            corpus = self.corpora.get(ds)
            return run(lambda: client.generate_images(ds, model, sources_of(ds), [int(index)], with_decoded=True, decoded_corpus=corpus), progress)

        def generate_test(ds, model, progress=gr.Progress()):
            corpus = self.corpora.get(ds)
            return run(lambda: client.generate_images(ds, model, sources_of(ds), None, with_decoded=True, decoded_corpus=corpus), progress)

        def decode_and_reconstruct(ds, embedder, source, generator, corpus_path, progress=gr.Progress()):
            """Decode, then draw every decoded caption: the brain's reconstruction of each test stimulus."""
            summary = decode(ds, embedder, source, corpus_path, progress)
            if source != "reference" or not generator or not summary.startswith("✅"):
                return summary  # Explore shows the decoding of the reference captions
            corpus = self.corpora.get(ds)
            return summary + "  \n" + run(
                lambda: client.generate_images(ds, generator, [], None, with_decoded=True, decoded_corpus=corpus), progress
            )

        def after_captions(ds, index):
            try:
                return refresh_captions(ds, int(index)), gr.update(choices=self.sources(ds))
            except BackendError as err:
                raise gr.Error(str(err)) from None

        def show_reconstructions(ds, index, model):
            try:
                payload = client.switch(ds, int(index), size=256, model=model or None, decoded_corpus=self.corpora.get(ds))
            except BackendError as err:
                raise gr.Error(str(err)) from None
            items = items_from_switch(payload)
            return items if from_brain is None else (items, brain_reconstruction(payload, model))

        def cancel_all():
            cancelled = [client.cancel_job(j["id"])["id"] for j in client.jobs() if j["state"] in ("queued", "running")]
            return f"asked {len(cancelled)} job(s) to stop" if cancelled else "no job is running"

        shown = self.reconstructions if from_brain is None else [self.reconstructions, from_brain]

        def pressed(button, label):
            return button.click(announce(label), None, self.status, queue=False, show_progress="hidden")

        pressed(self.caption_button, "captioning").then(caption, [dataset_state, self.captioner], self.status).then(
            after_captions, [dataset_state, stimulus_state], [captions_html, self.source]
        )
        pressed(self.embed_button, "embedding captions").then(embed, [dataset_state, self.embedder, self.source], self.status)
        pressed(self.decode_button, "decoding from the brain").then(
            decode_and_reconstruct, [dataset_state, self.embedder, self.source, self.generator, self.corpus_file], self.status
        ).then(
            after_captions, [dataset_state, stimulus_state], [captions_html, self.source]
        ).then(show_reconstructions, [dataset_state, stimulus_state, self.generator], shown)
        for button, handler, inputs in (
            (self.generate_button, generate, [dataset_state, self.generator, stimulus_state]),
            (self.generate_test_button, generate_test, [dataset_state, self.generator]),
        ):
            pressed(button, "reconstructing").then(handler, inputs, self.status).then(
                show_reconstructions, [dataset_state, stimulus_state, self.generator], shown
            )
        self.generator.change(show_reconstructions, [dataset_state, stimulus_state, self.generator], shown)
        self.cancel_button.click(cancel_all, None, self.status)

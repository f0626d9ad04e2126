"""The "Brain -> caption" tab: captions generated from the brain by a frozen language model (the
embedding-prefix decoder and the Brain Q-Former behind SmolLM2), scored beside retrieval and
beside their ceiling, and per-stimulus rows (reference, retrieved, generated, Q-Former, ceiling). Also the captions panel's row."""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from backend.service.client import BackendError
from viewer.model_runs import follow_job, job_summary

METRICS = ["bleu1", "bleu4", "meteor", "rouge_l", "cider", "similarity"]
#: Shown only where a CLIP pair's weights are present (the backend leaves them out otherwise).
CLIP_METRICS = ["clip_s", "refclip_s"]
ROWS = {"retrieval": "retrieval (nearest training caption)", "brain": "prefix decoder, from the brain",
        "qformer": "Brain Q-Former, from the brain", "ceiling": "ceiling (prefix decoder fed the true caption embedding)"}


def _scores(metrics: dict) -> dict:
    """The table's columns for one row of metrics, rounded (CLIP-S / RefCLIP-S where present)."""
    shown = METRICS + [m for m in CLIP_METRICS if metrics.get(m) is not None]
    return {m: round(metrics[m], 3) for m in shown}


def generated_row(client, dataset_id: str, index: int) -> str:
    """The captions panel's row for the caption generated from the brain (default settings), or ""."""
    try:
        entry = client.brain_caption(dataset_id, index)
    except BackendError as err:
        if err.status in (404, 409):
            return ""
        raise
    return generated_row_html(entry)


def generated_row_html(entry: dict | None) -> str:
    """The captions panel's row for a generated-caption entry ({generated, similarity,
    language_model}, as the API's brain-caption read and the switch give it), or "" for None."""
    if not entry:
        return ""
    return ("<tr class='decoded'><td class='who'>Generated from the brain</td>"
            f"<td>{html.escape(entry['generated'])} <span class='ctx-note'>(cosine {entry['similarity']:.2f} to the reference; "
            f"{html.escape(entry['language_model'].split('/')[-1])} behind a prefix decoder)</span></td></tr>")


class BrainCaptionsTab:
    """Create inside a ``gr.Tab``; then :meth:`wire`."""

    def __init__(self, client) -> None:
        self.client = client
        gr.Markdown(
            "Captions **generated** from the brain, not retrieved: a ridge predicts the caption's text embedding from "
            "the responses, a small network turns it into soft-prefix vectors, and a frozen language model "
            "(SmolLM2-135M-Instruct, offline) writes the caption. The prefix decoder trains on the training stimuli's "
            "captions and on out-of-fold ridge predictions of them (so it learns to read predictions); the first run "
            "trains for minutes on a CPU, later runs read the store. *Ceiling*: the same decoder fed the true caption "
            "embedding. The prefix's slots spell the caption in the LM's own token embeddings inside a 'Repeat:' "
            "prompt, and the LM writes it out. The **Brain Q-Former** (MindSemantix) instead reads the responses "
            "directly: brain tokens (regions, in patches) are read by learned query tokens, which become the LM's "
            "prefix; trained end to end on (response, caption) pairs with the LM loss plus a contrastive loss. "
            "Retrieval's row appears once the decode job (under *Run models*) has run. Uses the text "
            "embedder chosen under *Run models*."
        )
        with gr.Row():
            self.button = gr.Button("Generate captions from the brain", elem_id="ctx-brain-captions-run")
            self.qformer = gr.Button("Train the Brain Q-Former", elem_id="ctx-brain-qformer-run")
            self.cancel = gr.Button("Cancel", variant="stop", elem_id="ctx-brain-captions-cancel")
        self.status = gr.Markdown(elem_id="ctx-brain-captions-status")
        self.table = gr.Dataframe(label="Test split: captions against the references", interactive=False,
                                  elem_id="ctx-brain-captions-table")
        self.rows = gr.Dataframe(label="Per stimulus (first 50 test stimuli)", interactive=False, wrap=True,
                                 elem_id="ctx-brain-captions-rows")

    def tables(self, ds: str, embedder_id: str):
        table = self.client.brain_captions(ds, embedder=embedder_id)
        scores = dict(table["metrics"])
        try:
            qformer = self.client.brain_qformer(ds, embedder=embedder_id)
        except BackendError as err:
            if err.status != 404:
                raise
            qformer = None
        if qformer is not None:
            scores["qformer"] = qformer["metrics"]["qformer"]
        order = [k for k in ROWS if k in scores] + [k for k in scores if k not in ROWS]
        metrics = pd.DataFrame([{"captions": ROWS.get(k, k), **_scores(scores[k])} for k in order])
        rows = pd.DataFrame(self.client.brain_caption_rows(ds, embedder=embedder_id, limit=50))
        if qformer is not None and "index" in rows:
            rows["qformer"] = [qformer["stimuli"].get(str(int(i)), {}).get("generated") for i in rows["index"]]
        rows = rows[[c for c in ("index", "reference", "retrieved", "generated", "qformer", "ceiling", "similarity") if c in rows]]
        training = table["training"]
        how = "read from the store" if training.get("cached") else f"trained in {training.get('seconds', 0):.0f} s"
        note = (f"Decoder {how} ({training.get('steps')} steps, final loss {training.get('final_loss')}); "
                f"ceiling exact matches {table['metrics']['ceiling'].get('exact_match', 0):.0%}.")
        return note, metrics, rows

    def wire(self, dataset_state, embedder) -> None:
        client = self.client

        def run(ds, embedder_id, progress=gr.Progress()):
            try:
                job = follow_job(client, lambda: client.brain_captions_job(ds, embedder=embedder_id), progress)
                if job["state"] != "done":
                    return job_summary(job), gr.update(), gr.update()
                return self.tables(ds, embedder_id)
            except BackendError as err:
                raise gr.Error(str(err)) from None

        def run_qformer(ds, embedder_id, progress=gr.Progress()):
            try:
                job = follow_job(client, lambda: client.brain_qformer_job(ds, embedder=embedder_id), progress)
                if job["state"] != "done":
                    return job_summary(job), gr.update(), gr.update()
                try:
                    return self.tables(ds, embedder_id)
                except BackendError as err:  # the prefix decoder has not run: the Q-Former's scores alone
                    if err.status != 404:
                        raise
                    q = client.brain_qformer(ds, embedder=embedder_id)["metrics"]["qformer"]
                    table = pd.DataFrame([{"captions": ROWS["qformer"], **_scores(q)}])
                    return job_summary(job), table, gr.update()
            except BackendError as err:
                raise gr.Error(str(err)) from None

        def cancel():
            for job in client.jobs():
                if job["kind"] in ("brain-captions", "brain-qformer") and job["state"] in ("queued", "running"):
                    client.cancel_job(job["id"])
            return "Cancelling: training stops before its next step."

        self.button.click(run, [dataset_state, embedder], [self.status, self.table, self.rows])
        self.qformer.click(run_qformer, [dataset_state, embedder], [self.status, self.table, self.rows])
        self.cancel.click(cancel, None, [self.status])

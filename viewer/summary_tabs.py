"""Summary tabs: the captioner comparison (encoding accuracy against reconstruction quality, one
point per captioner, the relation the mouse study reports) and RSA of regions against caption models."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd

from backend.service.client import BackendError
from viewer.manifold_panel import caption_lookup
from viewer.model_runs import FALLBACK_TEXT_TO_IMAGE, announce, follow_job, job_summary
from viewer.plotly_view import PlotlyView, figure_json
from viewer.plots import comparison_figure, rdm_figure, rsa_figure

COLUMNS = {
    "source": "captioner",
    "encoding_r": "encoding r (signal units)",
    "two_way": "decoding 2-way",
    "image_two_way": "reconstruction 2-way (image embedding)",
    "image_similarity": "reconstruction similarity (image embedding)",
    "pixcorr": "reconstruction PixCorr",
    "ssim": "reconstruction SSIM",
    "image_embedder": "image embedder",
}


class ComparisonTab:
    """Create inside a ``gr.Tab``; then :meth:`wire`."""

    def __init__(self, client) -> None:
        self.client = client
        gr.Markdown(
            "For every captioner that has captioned the dataset: how well its captions' embeddings predict the brain "
            "(mean test r of the encoding model over units with explainable variance), and how well images "
            "reconstructed *from the brain* through its text space match the stimuli (decoded caption → text-to-image): "
            "embedding 2-way identification (is a reconstruction closer to its own stimulus than to another, in an image "
            "embedder's space: CLIP when its weights are here, on the demo world its simulated scene reader) and the pixel "
            "metrics PixCorr and SSIM, which mostly measure background and layout. Uses the text embedder and "
            "text-to-image model chosen under *Run models*."
        )
        self.button = gr.Button("Compare captioners", elem_id="ctx-compare-run")
        self.status = gr.Markdown(elem_id="ctx-compare-status")
        self.plot = PlotlyView("ctx-compare-plot", height=440).html
        self.table = gr.Dataframe(label="Per captioner", interactive=False, elem_id="ctx-compare-table")

    def wire(self, dataset_state, embedder, generator) -> None:
        client = self.client

        def compare(ds, embedder_id, generator_id, progress=gr.Progress()):
            try:
                job = follow_job(client, lambda: client.compare_captioners(ds, embedder_id, generator_id or FALLBACK_TEXT_TO_IMAGE), progress)
            except BackendError as err:
                raise gr.Error(str(err)) from None
            if job["state"] != "done":
                return job_summary(job), gr.update(), gr.update()
            frame = pd.DataFrame(job["result"]["rows"])
            table = frame.rename(columns=COLUMNS)
            note, y = "", "image_two_way"
            if "image_two_way" not in frame:  # no image embedder for this dataset: plot the pixel metric
                y = "pixcorr"
                note = " No image embedder here (pull a CLIP): the plot shows PixCorr."
            elif frame["image_embedder"].iloc[0] == "sim-scene-reader":
                note = " Image embedding: the demo world's scene reader (simulated)."
            figure = figure_json(comparison_figure(frame.to_dict("records"), y=y))
            return f"Compared {len(frame)} caption sources in {job['elapsed_s']:.1f} s.{note}", figure, table

        self.button.click(announce("captioner comparison"), None, self.status, queue=False, show_progress="hidden").then(
            compare, [dataset_state, embedder, generator], [self.status, self.plot, self.table])


class RsaTab:
    """The "RSA" tab: how each region's representational geometry matches each caption model's."""

    def __init__(self, client) -> None:
        self.client = client
        gr.Markdown(
            "Representational dissimilarity matrices (1 - Pearson r between stimuli) of each brain region or area and "
            "of each caption source's text embeddings, compared by Spearman correlation over 20 random subsets of "
            "100 stimuli (mean ± sd). Uses the text embedder chosen under *Run models*."
        )
        self.button = gr.Button("Compute RSA", elem_id="ctx-rsa-run")
        self.status = gr.Markdown(elem_id="ctx-rsa-status")
        # Points with error bars, not bars: a sum of correlations means nothing.
        self.plot = PlotlyView("ctx-rsa-plot", height=420).html
        self.table = gr.Dataframe(label="Region x caption source", interactive=False, elem_id="ctx-rsa-table")
        gr.Markdown(
            "**The matrices themselves**: a region's RDM beside a caption model's, over the first 100 test stimuli "
            "(responses averaged over repeats), ordered by clustering the brain RDM; colours are rank percentiles."
        )
        with gr.Row():
            self.region = gr.Dropdown([], label="Region / area", scale=1, elem_id="ctx-rsa-region")
            self.source = gr.Dropdown([], label="Caption source", scale=1, elem_id="ctx-rsa-source")
        self.matrices = PlotlyView("ctx-rsa-rdms", height=460).html

    def show_matrices(self, ds, region, source, embedder_id):
        if not (ds and region and source and embedder_id):
            return gr.update()
        try:
            pair = self.client.rdms(ds, region, source, embedder_id)
        except BackendError as err:
            raise gr.Error(str(err)) from None
        try:
            captions = caption_lookup(self.client, ds)
        except BackendError:
            captions = {}
        return figure_json(rdm_figure(
            [np.asarray(pair["brain"]), np.asarray(pair["model"])],
            [f"brain: {region}", f"text: {source} ({embedder_id.split('/')[-1]})"],
            [int(i) for i in pair["stimuli"]], captions,
            footer=f"{len(pair['stimuli'])} stimuli · Spearman {pair['spearman']:.3f} between the two RDMs",
        ))

    def wire(self, dataset_state, embedder) -> None:
        client = self.client

        def run(ds, embedder_id, progress=gr.Progress()):
            try:
                job = follow_job(client, lambda: client.rsa(ds, embedder_id), progress)
            except BackendError as err:
                raise gr.Error(str(err)) from None
            if job["state"] != "done":
                return job_summary(job), gr.update(), gr.update(), gr.update(), gr.update()
            frame = pd.DataFrame(job["result"]["rows"])
            spread = frame.assign(value=frame["mean"].map("{:.3f}".format) + " ± " + frame["sd"].map("{:.3f}".format))
            wide = spread.pivot(index="region", columns="source", values="value").reset_index()
            # Start the matrices on the best-matching pair: the one worth looking at first.
            best = frame.loc[frame["mean"].idxmax()]
            regions, sources = list(dict.fromkeys(frame["region"])), list(dict.fromkeys(frame["source"]))
            return (
                f"RSA over {frame['region'].nunique()} regions in {job['elapsed_s']:.1f} s.",
                figure_json(rsa_figure(frame.to_dict("records"))),
                wide,
                gr.update(choices=regions, value=best["region"]),
                gr.update(choices=sources, value=best["source"]),
            )

        self.button.click(announce("RSA"), None, self.status, queue=False, show_progress="hidden").then(
            run, [dataset_state, embedder], [self.status, self.plot, self.table, self.region, self.source]).then(
            self.show_matrices, [dataset_state, self.region, self.source, embedder], self.matrices
        )
        for choice in (self.region, self.source):
            choice.input(self.show_matrices, [dataset_state, self.region, self.source, embedder], self.matrices)

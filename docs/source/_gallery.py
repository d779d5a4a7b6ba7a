"""Helpers of the examples gallery, importable by name so that Sphinx can cache the
configuration (sphinx-gallery accepts "module.function" strings)."""


def fmrec_figures(block, block_vars, gallery_conf, **kwargs):
    """Image scraper for the Figures fmrec.plot returns.

    fmrec draws on the Agg canvas without pyplot, so sphinx-gallery's matplotlib scraper
    (which asks pyplot for its figures) sees none. This one saves every Figure bound to a
    top-level name of the example that it has not saved before, in the order the names were
    first bound.
    """
    from matplotlib.figure import Figure
    from sphinx_gallery.scrapers import figure_rst

    seen = gallery_conf.setdefault("_fmrec_seen", {}).setdefault(block_vars["src_file"], set())
    paths = []
    for value in list(block_vars["example_globals"].values()):
        if isinstance(value, Figure) and id(value) not in seen:
            seen.add(id(value))
            path = next(block_vars["image_path_iterator"])
            value.savefig(path, dpi=96)
            paths.append(path)
    return figure_rst(paths, gallery_conf["src_dir"])


# The gallery's order: from a first model to a cluster.
GALLERY_ORDER = [
    "plot_ratings_side_features.py",
    "plot_implicit_bpr.py",
    "plot_cold_start_foldin.py",
    "plot_tuning_pruning.py",
    "plot_embeddings.py",
    "plot_dask.py",
]


def gallery_order(filename: str):
    return (GALLERY_ORDER.index(filename) if filename in GALLERY_ORDER else len(GALLERY_ORDER),
            filename)



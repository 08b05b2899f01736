"""PNG figures: a generic saver (`save_figure`, `pyplot` with matplotlib's Agg backend, no display) and the two
plots every stage report uses: learning curves and calibration (reliability diagrams)."""

from pathlib import Path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    """Lay out, write the PNG (creating its folder), close the figure."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def plot_learning_curve(curves: dict[str, list[tuple[float, float]]], path: str | Path, *, title: str,
                        xlabel: str = "human labels used", ylabel: str = "test accuracy (%)",
                        anchors: dict[str, float] | None = None) -> Path:
    """`curves`: name → [(x, y), ...]; `anchors`: name → y drawn as dashed reference lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in curves.items():
        xs, ys = zip(*points) if points else ((), ())
        ax.plot(xs, ys, marker="o", label=name)
    for i, (name, y) in enumerate((anchors or {}).items()):
        ax.axhline(y, linestyle="--", linewidth=1, color=f"C{(i + len(curves)) % 10}", label=f"{name} ({y:g})")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_calibration(reliability: dict[str, list[dict]], path: str | Path, *, title: str = "Calibration") -> Path:
    """`reliability`: name → bins as `training.metrics.reliability` returns them (confidence, accuracy, count)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    for name, bins in reliability.items():
        pts = [(b["confidence"], b["accuracy"]) for b in bins if b.get("count")]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", label=name)
    ax.set(title=title, xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)

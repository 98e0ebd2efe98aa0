"""The figure of ``backdoorlab federated``: clean accuracy and attack success rate of the global model per round,
the attack rounds shaded."""

from __future__ import annotations

from ..io import save_figure_png


def plot_rounds(rounds: list[dict], out, title: str = "") -> None:
    """Write a PNG of CA (and ASR when measured) against the round (0: the starting model), with every attack
    round marked by a shaded band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    x = [r["round"] for r in rounds]
    measured = [r for r in rounds if r.get("clean_accuracy") is not None]  # --evaluate-every skips some rounds
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    attack = [r["round"] for r in rounds if r.get("attack_round")]
    for i, r in enumerate(attack):
        ax.axvspan(r - 0.5, r + 0.5, color="tab:red", alpha=0.12, lw=0, label="attack round" if i == 0 else None)
    measured_x = [r["round"] for r in measured]
    ax.plot(measured_x, [100 * r["clean_accuracy"] for r in measured], "o-", ms=3, color="tab:blue",
            label="clean accuracy (CA)")
    if any(r.get("attack_success_rate") is not None for r in measured):
        ax.plot(measured_x, [100 * r["attack_success_rate"] for r in measured], "s-", ms=3, color="tab:red",
                label="attack success rate (ASR)")
    ax.set_xlabel("round (0: the starting model)")
    ax.set_ylabel("% of the test set")
    ax.set_ylim(-2, 102)
    ax.set_xlim(min(x) - 0.5, max(x) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=9)
    save_figure_png(fig, out)
    plt.close(fig)

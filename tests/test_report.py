import matplotlib.pyplot as plt
import pytest

from backdoorlab import report


def _rows():
    return [{"t": t, "val_accuracy": 0.9, "clean_accuracy": 0.95 - 0.1 * t * (1 - t),
             "attack_success_rate": 1.0 if t in (0.0, 1.0) else 0.05} for t in (0.0, 0.25, 0.5, 0.75, 1.0)]


@pytest.fixture
def figures(monkeypatch):
    """The figures plot_path closes, kept open for inspection."""
    kept, close = [], plt.close
    monkeypatch.setattr(report.plt, "close", kept.append)
    yield kept
    for fig in kept:
        close(fig)


def _lines(fig):
    return {line.get_label(): line for line in fig.axes[0].get_lines()}


def test_plot_path_marks_an_averaged_export_at_both_ts(tmp_path, figures):
    out = tmp_path / "path.png"
    report.plot_path(_rows(), 0.25, out, ensemble=[0.25, 0.75],
                     exported={"clean_accuracy": 0.9512, "attack_success_rate": 0.0213})
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = _lines(figures[0])
    ca = lines["exported model (average): CA 95.12%"]
    asr = lines["exported model (average): ASR 2.13%"]
    assert list(ca.get_xdata()) == [0.25, 0.75] and list(ca.get_ydata()) == pytest.approx([95.12, 95.12])
    assert list(asr.get_ydata()) == pytest.approx([2.13, 2.13])


def test_plot_path_marks_a_refined_export_at_the_chosen_t_and_skips_unknown_asr(tmp_path, figures):
    report.plot_path(_rows(), 0.5, tmp_path / "path.png",
                     exported={"clean_accuracy": 0.97, "attack_success_rate": None})
    lines = _lines(figures[0])
    assert list(lines["exported model (refined): CA 97.00%"].get_xdata()) == [0.5]
    assert not any("ASR" in name for name in lines)


def test_plot_path_without_an_export_draws_the_path_only(tmp_path, figures):
    report.plot_path(_rows(), 0.5, tmp_path / "path.png")
    assert not any(name.startswith("exported") for name in _lines(figures[0]))

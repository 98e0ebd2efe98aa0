"""``backdoorlab --threads N COMMAND``: torch computes with N CPU threads; anything but an integer >= 1 is a
one-line error before the command runs."""

import pytest
import torch

from backdoorlab.cli import main


@pytest.fixture
def threads_restored():
    """Put torch's thread count back after the test: the option changes it for the whole process."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("n", [1, 3])
def test_threads_sets_torchs_thread_count_before_the_command(n, threads_restored, capsys):
    torch.set_num_threads(2)  # neither value asked below, so that a missed call shows
    assert main(["--threads", str(n), "list"]) == 0
    assert torch.get_num_threads() == n
    assert "small-cnn" in capsys.readouterr().out  # the command ran


def test_without_threads_torch_keeps_its_count(threads_restored, capsys):
    torch.set_num_threads(2)
    assert main(["list"]) == 0
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", ""])
def test_a_bad_thread_count_is_one_line_naming_it(value, threads_restored, capsys):
    torch.set_num_threads(2)
    assert main(["--threads", value, "list"]) == 2
    out, err = capsys.readouterr()
    assert err == f"error: --threads must be an integer >= 1, got {value!r}\n"
    assert out == "" and torch.get_num_threads() == 2  # refused before the command ran or anything changed


def test_threads_is_offered_in_the_help(capsys):
    assert main(["--help"]) == 0
    assert "--threads N" in capsys.readouterr().out

"""`crrxr build` on the command line: what it prints."""

from crrxr.cli import main
from crrxr.simulate import simulate_rss


def test_no_progress_keeps_plan_and_summary(tmp_path, capsys):
    rss = tmp_path / "rss.zarr"
    simulate_rss(rss, bundle=7, exposures=3, nwave=12, seed=3)
    cube = tmp_path / "cube.zarr"
    assert (
        main(
            [
                "build",
                str(rss),
                str(cube),
                "--method",
                "shepard",
                "--wave-chunk",
                "5",
                "--scheduler",
                "synchronous",
                "--no-progress",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "chunks:          3 x 5 channels" in err
    assert "built " in err and "3/3 chunk(s) solved" in err
    assert "chunks done" not in err  # no progress lines
    # and a second build without --resume/--overwrite is a usage error (2), naming both flags
    assert main(["build", str(rss), str(cube), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err

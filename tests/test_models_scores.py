"""Every registered model with every score, its weight fixed or chosen, measured in eval or training
mode: each combination trains, is tested and scores new images end to end, or is refused in one line
before training. Generated from the registry and the score table: a new model or score is covered
without editing this file.
"""
import pytest

from lib.models import MODELS
from lib.scoring.functions import SCORES
from tests.helpers import one_line_error, run_main, train_cli

MODES = {"eval": [], "train": ["--fixes", "default,-eval_mode_scoring,-score_on_validation"]}
WEIGHTS = {"fixed": [], "val": ["--score_weight", "val"]}


def combinations():
    return [pytest.param(model, score, weight, mode, id=f"{model}-{score}-{weight}-{mode}")
            for model in sorted(MODELS) for score in SCORES for weight in WEIGHTS for mode in MODES]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tests.conftest import make_folder_dataset
    return make_folder_dataset(tmp_path_factory.mktemp("scores"), n_train=40, n_test_normal=6, n_test_abnormal=6)


@pytest.mark.slow
@pytest.mark.parametrize("model, score, weight, mode", combinations())
def test_every_model_and_score_works_end_to_end_or_is_refused_before_training(data, tmp_path, model, score,
                                                                               weight, mode):
    import predict
    args = ["--dataset", data.name, "--dataroot", data.parent, "--isize", "8", "--nc", "3", "--ngf", "4",
            "--ndf", "4", "--nz", "4", "--batchsize", "8", "--niter", "1", "--n_critic", "1", "--device", "cpu",
            "--manualseed", "0", "--model", model, "--score", score, "--outf", "out", *WEIGHTS[weight],
            *MODES[mode]]
    if model == "w_skipganomaly":
        args += ["--n_critic", "1"]
    trained = train_cli(args, tmp_path, check=False)
    if trained.returncode != 0:
        one_line_error(trained)
        assert not (tmp_path / "out").exists()  # refused before anything was written, let alone trained
        return
    run = next((tmp_path / "out").rglob("results.json")).parent
    tested = train_cli(["--phase", "test", "--load_weights", run, "--device", "cpu"], tmp_path)
    assert "test: auroc" in tested.stdout
    scored = run_main(predict.main, ["--path", data / "test", "--weights", run, "--device", "cpu",
                                     "--out", tmp_path / "predicted"], tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert "score" in scored.stdout


def test_ganomaly_with_the_original_score_and_its_weight_chosen_on_validation_trains(tmp_path):
    """It used to train an epoch, then die: the loop read a weight only Skip-GANomaly's model had."""
    from tests.helpers import TINY
    proc = train_cli([*TINY, "--model", "ganomaly", "--niter", "1", "--score", "original", "--score_weight", "val",
                      "--outf", "out"], tmp_path)
    assert "test auroc" in proc.stdout

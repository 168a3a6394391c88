"""How a run scores: one value, decided once from its options and its model's declarations.

The training loop owns it (lib/training/trainer.py): which score it fits, or chooses on the validation
split, before every evaluation; the original score's weight, fixed or chosen; and whether images
are measured with training-mode BatchNorm as the original did. A model only declares what it can
measure (`measurements`) and its own score (`default_score`); nothing here is model state, and
nothing switches it during a run. `--phase test` and predict.py build the same value from the
run's stored options.
"""
from dataclasses import dataclass

from ..errors import UserError
from ..original import applies
from .functions import DEFAULT_WEIGHT, SCORES


@dataclass(frozen=True)
class ScorePolicy:
    choice: str  # a score's name, or "val": the candidate that ranks the validation split best
    weight: float | None = DEFAULT_WEIGHT  # the original score's image weight; None: chosen on validation
    train_mode: bool = False  # measure as the original: BatchNorm normalises each batch by its own statistics

    def candidates(self, measurements) -> list[str]:
        """The scores fitted before an evaluation: with "val", every one `measurements` allow (the original's first)."""
        if self.choice != "val":
            return [self.choice]
        return [name for name, function in SCORES.items() if set(function.needs) <= set(measurements)]


def score_policy(opt, model_class) -> ScorePolicy:
    """The policy of a run of `model_class` with options `opt`; a UserError for a score it cannot measure.

    Unset, --score is 'val' wherever there is a validation split to choose on (the score_on_validation
    fix), unless --score_weight asks for the original score's weighting; else the model's own score.
    """
    weight = getattr(opt, "score_weight", DEFAULT_WEIGHT)
    on_validation = (applies(opt, "score_on_validation") and applies(opt, "eval_mode_scoring")
                     and getattr(opt, "val_ratio", 0) > 0 and weight == DEFAULT_WEIGHT)
    choice = getattr(opt, "score", None) or ("val" if on_validation else model_class.default_score)
    if choice != "val":
        missing = set(SCORES[choice].needs) - set(model_class.measurements)
        if missing:
            raise UserError(f"--score {choice} needs {', '.join(sorted(missing))}, which --model "
                            f"{model_class.name} does not measure; choose another --score")
    uses_weight = choice == "original" or choice == "val" and set(SCORES["original"].needs) <= set(
        model_class.measurements)  # with "val", the original score is a candidate with this weight
    if weight != DEFAULT_WEIGHT and not uses_weight:  # a weight no score of this run would use
        raise UserError(f"--score_weight {weight} weighs the original score, which this run does not score with "
                        f"(--model {model_class.name}, score {choice}); add --score original, or drop --score_weight")
    return ScorePolicy(choice, None if weight == "val" else float(weight), not applies(opt, "eval_mode_scoring"))


def describe(scoring, weight_chosen: bool = False) -> str:
    """One line for predict.py: what a fitted score is (`weight_chosen`: its weight came from validation)."""
    if scoring.name == "original":
        w = scoring.stats.get("weight", DEFAULT_WEIGHT)
        chosen = " (chosen on the validation split)" if weight_chosen else ""
        return f"score = {w:g} x image MSE + {1 - w:g} x feature MSE{chosen}"
    return f"score: {scoring.name} ({SCORES[scoring.name].description}; higher = more anomalous)"

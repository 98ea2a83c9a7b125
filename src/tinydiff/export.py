"""A tinydiff model as a diffusers pipeline: ``tinydiff export --format diffusers`` writes a folder that
``diffusers.DDPMPipeline.from_pretrained`` loads (unet/, scheduler/, model_index.json).

Only a model whose network is diffusers' own UNet2DModel (``--net diffusers``) can go there: tinydiff's
U-Net and MLP have no diffusers class. The scheduler gets the model's betas as they are
(``trained_betas``), so every schedule, T and SNR shift carries over exactly, and its prediction type
(eps -> epsilon, x0 -> sample, v -> v_prediction); DDPMPipeline has no class labels, so a
class-conditional model is refused.
"""

from __future__ import annotations

from pathlib import Path

from .errors import TinydiffError
from .model import DiffusionModel

PREDICTION_TYPES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def diffusers_refusal(model: DiffusionModel) -> str | None:
    """Why ``model`` cannot become a DDPMPipeline, or None when it can."""
    kind = model.config["net"]["kind"]
    if kind != "diffusers":
        return (
            f"its network is tinydiff's {kind!r}, which has no diffusers class; a model trained with "
            "--net diffusers (UNet2DModel) can be exported"
        )
    if model.num_classes:
        return "it is class-conditional, and diffusers' DDPMPipeline takes no class labels"
    return None


def to_diffusers(model: DiffusionModel, out: str | Path) -> Path:
    """Write ``model`` as a DDPMPipeline folder; a TinydiffError saying why if it cannot be one."""
    reason = diffusers_refusal(model)
    if reason:
        raise TinydiffError(f"cannot export to diffusers: {reason}")
    from diffusers import DDPMPipeline, DDPMScheduler  # --net diffusers models need diffusers installed anyway

    scheduler = DDPMScheduler(
        num_train_timesteps=model.schedule.num_timesteps,
        trained_betas=model.schedule.betas.tolist(),
        prediction_type=PREDICTION_TYPES[model.prediction],
        variance_type="fixed_small",  # DDPM's posterior variance, tinydiff's default
        clip_sample=True,  # tinydiff clips the predicted x0 to [-1, 1]
    )
    out = Path(out)
    DDPMPipeline(unet=model.net.unet.cpu(), scheduler=scheduler).save_pretrained(out, safe_serialization=True)
    return out

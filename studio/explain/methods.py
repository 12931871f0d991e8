"""The attribution methods, one registry entry each, all computed by Captum 0.9.

A `Method` knows its name (the CLI's `--method`), a label and a line of help for the page, which inputs
it fits, whether its attributions must sum to f(x) - f(baseline) (the completeness / efficiency axiom,
checked after every call), and a function `run(problem) -> (attributions, convergence delta)`.
Adding a method is one `register(Method(...))`; the CLI, the page and the tests read the registry.

Gradient methods can attribute to a layer's output (`Settings.layer`, by path) instead of the input.
Token models (int64 ids) cannot be differentiated by their input: gradient methods attribute at the
output of the embedding layer (Captum's layer variants, summed over the embedding dimension: one value
per token); perturbation methods (occlusion, LIME, KernelSHAP) replace whole tokens by the padding token.
GradientSHAP and Grad-CAM say why they do not fit token ids (`Method.not_for_tokens`).
LIME and KernelSHAP fit Captum's SGD linear surrogate in torch (no scikit-learn model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from studio.errors import StudioError

if TYPE_CHECKING:
    import torch

# torch and Captum are imported inside the functions: the CLI's parser reads this registry (the method
# names) without paying for torch, like every other command's parser.

# ---- the problem a method solves ----------------------------------------------------------------------


@dataclass
class Problem:
    """One sample to explain, ready for Captum: `forward` maps a batch (B, *sample) to scores (B, K)."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    x: torch.Tensor              # (1, *sample): float, or int64 token ids
    baseline: torch.Tensor       # (1, *sample), like x
    target: int
    tokens: bool                 # int64 token ids: gradients are taken at `at_layer` (the embedding)
    at_layer: torch.nn.Module | None  # gradient methods attribute to this layer's output instead of the input
    layer: torch.nn.Module | None  # Grad-CAM's layer (a conv by default, or any layer by its path)
    n_steps: int
    n_samples: int
    window: tuple[int, ...]
    stride: tuple[int, ...]
    internal_batch_size: int
    seed: int = 0
    extra: dict = field(default_factory=dict)  # what a method reports besides its map (e.g. Grad-CAM's layer)


@dataclass(frozen=True)
class Method:
    name: str                       # the CLI's --method
    label: str
    help: str
    run: Callable[[Problem], tuple[torch.Tensor, float | None]]
    completeness: bool              # attributions sum to f(x) - f(baseline) (IG, SHAP's efficiency)
    uses_baseline: bool = True
    needs_layer: bool = False       # Grad-CAM: a layer with spatial maps
    not_for_tokens: str = ""        # why the method cannot explain token ids (empty: it can)
    uses_window: bool = False       # occlusion's window; LIME and KernelSHAP's patches
    rows: Callable[[Problem], int] = lambda p: 1  # forward rows it evaluates (progress and cost bound)


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise StudioError(f"unknown attribution method {name!r}; use one of {', '.join(METHODS)}")
    return METHODS[name]


def _token_float(p: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """Perturbation methods mix inputs and baselines in float; the forward rounds ids back."""
    return (p.x.float(), p.baseline.float()) if p.tokens else (p.x, p.baseline)


# ---- gradient methods ---------------------------------------------------------------------------------

def _per_token(p: Problem, a):
    """Token models: a layer attribution (1, T, E) summed over E, one value per token; other layers keep
    their output's shape."""
    return a.sum(-1) if p.tokens else a


def _integrated_gradients(p: Problem):
    from captum.attr import IntegratedGradients, LayerIntegratedGradients

    if p.at_layer is not None:
        ig = LayerIntegratedGradients(p.forward, p.at_layer)
        a, delta = ig.attribute(p.x, baselines=p.baseline, target=p.target, n_steps=p.n_steps,
                                internal_batch_size=p.internal_batch_size, return_convergence_delta=True)
        return _per_token(p, a), float(delta.reshape(-1)[0])
    ig = IntegratedGradients(p.forward)
    a, delta = ig.attribute(p.x, baselines=p.baseline, target=p.target, n_steps=p.n_steps,
                            internal_batch_size=p.internal_batch_size, return_convergence_delta=True)
    return a, float(delta.reshape(-1)[0])


def _gradient_shap(p: Problem):
    """Expected gradients at random points between the baseline and the input, `n_samples` of them, with
    a little Gaussian noise on the input (0.01 of its range); complete in expectation. Captum evaluates
    all samples in one batch, so they are drawn in chunks of `internal_batch_size` and averaged."""
    import torch
    from captum.attr import GradientShap, LayerGradientShap

    torch.manual_seed(p.seed)
    stdevs = 0.01 * (float(p.x.max() - p.x.min()) or 1.0)
    explainer = GradientShap(p.forward) if p.at_layer is None else LayerGradientShap(p.forward, p.at_layer)
    total, deltas, left = None, [], p.n_samples
    while left > 0:
        n = min(left, p.internal_batch_size)
        a, delta = explainer.attribute(p.x, baselines=p.baseline, target=p.target, n_samples=n, stdevs=stdevs,
                                       return_convergence_delta=True)
        total = a * n if total is None else total + a * n
        deltas.append(delta.reshape(-1))
        left -= n
    a = total / p.n_samples
    return a, float(torch.cat(deltas).mean())


def _saliency(p: Problem):
    """|d score / d x| (Simonyan et al.); at a layer |d score / d output|; for tokens the L2 norm of the
    gradient at each embedding."""
    from captum.attr import LayerGradientXActivation, Saliency

    if p.at_layer is not None:
        g = LayerGradientXActivation(p.forward, p.at_layer, multiply_by_inputs=False).attribute(p.x, target=p.target)
        return (g.norm(dim=-1) if p.tokens else g.abs()), None
    return Saliency(p.forward).attribute(p.x.clone().requires_grad_(True), target=p.target, abs=True), None


def _input_x_gradient(p: Problem):
    """d score / d x * x (Shrikumar et al.), signed; for tokens gradient x embedding, summed per token."""
    from captum.attr import InputXGradient, LayerGradientXActivation

    if p.at_layer is not None:
        return _per_token(p, LayerGradientXActivation(p.forward, p.at_layer).attribute(p.x, target=p.target)), None
    return InputXGradient(p.forward).attribute(p.x.clone().requires_grad_(True), target=p.target), None


def _grad_cam(p: Problem):
    """ReLU(sum_c mean(d score / d A_c) * A_c) of a layer's output A (Selvaraju et al.), upsampled
    (bilinear) to the input and repeated over its channels, so it is shaped like the sample."""
    from captum.attr import LayerAttribution, LayerGradCam

    cam = LayerGradCam(p.forward, p.layer).attribute(p.x, target=p.target, relu_attributions=True)
    spatial = tuple(p.x.shape[2:])
    if tuple(cam.shape[2:]) != spatial:
        cam = LayerAttribution.interpolate(cam, spatial, interpolate_mode="bilinear" if len(spatial) == 2
                                           else "linear")
    return cam.expand(p.x.shape).contiguous(), None


# ---- perturbation methods -----------------------------------------------------------------------------

def _occlusion(p: Problem):
    """Slide a window of baseline values over the input; each position's attribution is the mean drop
    of the score over the windows covering it (Zeiler and Fergus)."""
    from captum.attr import Occlusion

    x, b = _token_float(p)
    a = Occlusion(p.forward).attribute(x, sliding_window_shapes=p.window, strides=p.stride, baselines=b,
                                       target=p.target, perturbations_per_eval=p.internal_batch_size)
    return a, None


def feature_mask(p: Problem) -> torch.Tensor:
    """The features LIME and KernelSHAP switch on and off: patches of the occlusion window's size over
    images and signals (shared by the channels), one per column of a row, one per token."""
    import torch

    sample = tuple(p.x.shape[1:])
    if len(sample) == 1:
        return torch.arange(sample[0]).view(1, -1)
    spatial = sample[1:] if len(sample) == 3 else sample  # images share patches over channels
    steps = [max(1, w) for w in (p.window[1:] if len(sample) == 3 else p.window)]
    grids = torch.meshgrid(*[torch.arange(s) // k for s, k in zip(spatial, steps, strict=True)], indexing="ij")
    per_row = [(s + k - 1) // k for s, k in zip(spatial, steps, strict=True)]
    ids = grids[0] * (per_row[1] if len(per_row) > 1 else 1) + (grids[1] if len(grids) > 1 else 0)
    if int(ids.max()) < 1:
        raise StudioError(f"the window {p.window} covers the whole input {sample}, so LIME and KernelSHAP would "
                          "have a single feature; use a smaller window")
    return ids.expand(sample).unsqueeze(0).contiguous()


def _lasso_surrogate():
    """LIME's sparse linear model: Captum's torch Lasso trained by full-batch SGD, run long enough to
    converge on a few hundred binary samples (Captum's default 100 epochs at lr 0.01 do not). The step
    is 1 / (features + 1): the loss's curvature is at most the number of features switched on plus the
    bias, so this step never diverges."""
    from captum._utils.models.linear_model import SGDLasso

    class TorchLasso(SGDLasso):
        def fit(self, train_data, **kwargs):
            features = next(iter(train_data))[0].shape[1]
            kwargs = {"max_epoch": 2000, "initial_lr": 1.0 / (features + 1), "patience": 50, "threshold": 1e-8,
                      "alpha": 1e-3, **kwargs}
            return super().fit(train_data, **kwargs)

    return TorchLasso()


def _weighted_least_squares(model, dataloader, construct_kwargs, **_):
    """A Captum LinearModel's train_fn: the exact weighted least-squares fit (torch.linalg.lstsq, in
    float64, minimum norm when there are fewer samples than features). KernelSHAP's two samples of
    infinite weight (all features on, all off) then hold to float precision, so its values sum to
    f(x) - f(baseline), as Shapley values must."""
    import torch

    xs, ys, ws = [], [], []
    for batch in dataloader:
        x, y, w = batch if len(batch) == 3 else (*batch, None)
        xs.append(x.reshape(x.shape[0], -1))
        ys.append(y.reshape(x.shape[0], -1))
        ws.append(torch.ones(x.shape[0]) if w is None else w.reshape(-1))
    x, y, w = torch.cat(xs).double(), torch.cat(ys).double(), torch.cat(ws).double()
    root = (w / w.sum()).sqrt().unsqueeze(1)
    a = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1) * root
    solution = torch.linalg.lstsq(a, y * root, driver="gelsd").solution  # (features + 1, outputs)
    model._construct_model_params(weight_values=solution[:-1].T.float().contiguous(),
                                  bias_value=solution[-1].float(), **construct_kwargs)
    return {}


def _per_element(a: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Captum gives every element of a feature group the group's whole value; share it out instead, so
    the map sums to the sum of the feature values (KernelSHAP's f(x) - f(baseline)), at the same shape."""
    import torch

    sizes = torch.bincount(mask.reshape(-1))[mask].to(a.dtype)  # elements in each element's group
    return a / sizes


def _lime(p: Problem):
    import torch
    from captum.attr import Lime

    x, b = _token_float(p)
    torch.manual_seed(p.seed)
    lime = Lime(p.forward, interpretable_model=_lasso_surrogate())
    mask = feature_mask(p)
    a = lime.attribute(x, target=p.target, baselines=b, feature_mask=mask, n_samples=p.n_samples,
                       perturbations_per_eval=p.internal_batch_size)
    return _per_element(a, mask), None


def _kernel_shap(p: Problem):
    import torch
    from captum._utils.models.linear_model import LinearModel
    from captum.attr import KernelShap, Lime

    class TorchKernelShap(KernelShap):
        def __init__(self, forward_func):  # KernelShap's own __init__ builds a scikit-learn surrogate
            Lime.__init__(self, forward_func, interpretable_model=LinearModel(train_fn=_weighted_least_squares),
                          similarity_func=self.kernel_shap_similarity_kernel,
                          perturb_func=self.kernel_shap_perturb_generator)
            self.inf_weight = 1000000.0

    x, b = _token_float(p)
    torch.manual_seed(p.seed)
    mask = feature_mask(p)
    a = TorchKernelShap(p.forward).attribute(x, target=p.target, baselines=b, feature_mask=mask,
                                             n_samples=p.n_samples, perturbations_per_eval=p.internal_batch_size)
    return _per_element(a, mask), None


def _windows(p: Problem) -> int:
    n = 1
    for size, w, s in zip(p.x.shape[1:], p.window, p.stride, strict=True):
        n *= (size - w) // s + 1
    return n + 1


for _m in (
    Method("integrated-gradients", "Integrated gradients",
           "the path integral of the gradient from the baseline to the input (Sundararajan et al. 2017); "
           "sums to f(x) - f(baseline)", _integrated_gradients, completeness=True,
           rows=lambda p: p.n_steps + 2),
    Method("gradient-shap", "GradientSHAP",
           "expected gradients at random points between baseline and input (Lundberg and Lee 2017); sums to "
           "f(x) - f(baseline) on average", _gradient_shap, completeness=True, rows=lambda p: p.n_samples + 2,
           not_for_tokens="it draws points between the input and the baseline in input space (Captum's layer "
                          "variant too), and token ids have nothing in between"),
    Method("occlusion", "Occlusion",
           "the score's drop when a window of the input is replaced by the baseline (Zeiler and Fergus 2014)",
           _occlusion, completeness=False, rows=_windows, uses_window=True),
    Method("saliency", "Saliency", "the gradient's magnitude |d score / d x| (Simonyan et al. 2014)", _saliency,
           completeness=False, uses_baseline=False),
    Method("input-x-gradient", "Gradient x input", "d score / d x times x (Shrikumar et al. 2016), signed",
           _input_x_gradient, completeness=False, uses_baseline=False),
    Method("lime", "LIME", "a sparse linear model fitted in torch to the scores of random on/off patches "
           "(Ribeiro et al. 2016)", _lime, completeness=False, rows=lambda p: p.n_samples + 1, uses_window=True),
    Method("kernel-shap", "KernelSHAP", "Shapley values estimated by a weighted linear fit in torch (Lundberg and "
           "Lee 2017); sums to f(x) - f(baseline)", _kernel_shap, completeness=True,
           rows=lambda p: p.n_samples + 1, uses_window=True),
    Method("grad-cam", "Grad-CAM", "a convolution's feature maps weighted by their mean gradient (Selvaraju et al. "
           "2017): coarse, class-discriminative, never negative", _grad_cam, completeness=False,
           uses_baseline=False, needs_layer=True, not_for_tokens="it needs convolutional feature maps of an image"),
):
    register(_m)

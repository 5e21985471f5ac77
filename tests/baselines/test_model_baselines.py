"""White-box baselines (LPIPS-like activations, representer points, gradient similarity) on tiny models."""

import numpy as np
import pytest
import torch
from torch import nn

from fixtures_model import synthetic_latent_set
from songtrace.attribution.projection import Projector
from songtrace.baselines.base import QueryItem, TrainingSet, get_method, method_names, score_many
from songtrace.baselines.features import fixed_noise
from songtrace.diffusion.schedule import add_noise, v_target
from songtrace.errors import SongtraceError
from songtrace.model.dit import tiny_dit


class ToyModel(nn.Module):
    """x_t -> tanh(layers.0) -> project_out, per frame; conditioning ignored."""

    def __init__(self, channels=4, length=16, hidden=6, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.latent_shape = (channels, length)
        self.layers = nn.ModuleList([nn.Linear(channels, hidden)])
        self.project_out = nn.Linear(hidden, channels, bias=False)

    last_layer_name = "project_out"  # what the generic ModelTask reads for a module of another family

    def forward(self, x_t, t, cond, frame_mask=None):
        h = torch.tanh(self.layers[0](x_t.transpose(1, 2)) + t[:, None, None])
        return self.project_out(h).transpose(1, 2)

    def named_layer_groups(self):
        return {"all": [n for n, _ in self.named_parameters()]}

    def block_names(self):
        return ["layers.0"]


@pytest.fixture(scope="module")
def data():
    lat = synthetic_latent_set(n=12).subset("train")
    return TrainingSet(lat)


@pytest.fixture(scope="module")
def dit():
    return tiny_dit(latent_channels=4, latent_length=16, seed=1)


def test_registry_lists_every_method():
    names = method_names()
    for m in ("embedding", "version", "activations", "representer", "gradient", "unlearning"):
        assert m in names


@pytest.mark.parametrize("name", ["activations", "representer", "gradient"])
def test_model_methods_return_finite_scores_and_cache(name, data, dit):
    method = get_method(name, model=dit)
    q = QueryItem.from_latents(data.latents, data.ids[2], query_id="q")
    s = method.score(q, data)
    assert s.shape == (len(data),) and np.all(np.isfinite(s))
    assert len(data.cache) >= 1
    many = score_many(method, [q, q], data)
    assert np.allclose(many[0], s) and np.allclose(many[1], s)


def test_activations_self_similarity_is_maximal(data, dit):
    method = get_method("activations", model=dit, window_seconds=0.6, hop_seconds=0.3)
    for i in (0, 4):
        q = QueryItem.from_latents(data.latents, data.ids[i], query_id="self")
        s = method.score(q, data)
        assert s[i] == pytest.approx(1.0, abs=1e-5)
        assert s[i] >= s.max() - 1e-9
        assert int(np.argmax(s)) == i or np.isclose(s.max(), s[i])
    own = get_method("activations", model=dit, conditioning="own")
    assert own.score(QueryItem.from_latents(data.latents, data.ids[1]), data)[1] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(SongtraceError, match="conditioning"):
        get_method("activations", model=dit, conditioning="bogus")


def test_representer_matches_a_hand_computation():
    torch.manual_seed(0)
    lat = synthetic_latent_set(n=8)
    train = TrainingSet(lat)
    model = ToyModel().eval()
    ts, lam = (0.3, 0.7), 0.5
    method = get_method("representer", model=model, timesteps=ts, lam=lam, seed=4)
    q = QueryItem.from_latents(lat, lat.ids[3], query_id="q")
    q.latent = q.latent + 0.3 * torch.randn_like(q.latent)
    q.n_frames = 11
    got = method.score(q, train)

    noise = fixed_noise((4, 16), len(ts), 4).double()
    W, b = model.layers[0].weight.detach().double(), model.layers[0].bias.detach().double()
    P = model.project_out.weight.detach().double()
    n = len(lat)
    expected = np.zeros(n)
    for k, t in enumerate(ts):
        tt = torch.tensor([t], dtype=torch.float64)

        def feats(z, tt=tt, k=k, t=t):
            x = add_noise(z.double()[None], noise[k][None], tt)[0]  # [C, L]
            return torch.tanh(x.T @ W.T + b + t)  # [L, D]

        fq = feats(q.latent)[: q.n_frames].mean(0)
        for i in range(n):
            z = lat.latents[i].double()
            f = feats(z)
            v = v_target(z[None], noise[k][None], tt)[0]  # [C, L]
            phi = (f @ P.T).T  # [C, L]
            ni = int(lat.n_frames[i])
            total = 0.0
            for c in range(4):
                for j in range(ni):
                    alpha = -(phi[c, j] - v[c, j]) / (lam * n) / ni
                    total += float(alpha * (f[j] @ fq))
            expected[i] += total / 4 / len(ts)
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-9 * np.abs(expected).max())


def test_random_projections_preserve_cosines():
    rng = np.random.default_rng(0)
    g = torch.from_numpy(rng.standard_normal((6, 3000)))
    g[1] = g[0] + 0.5 * g[1]  # some correlated pairs
    g[3] = -g[2] + 0.8 * g[3]
    exact = nn.functional.normalize(g, dim=1) @ nn.functional.normalize(g, dim=1).T
    full = Projector("srdct", 3000, 3000, 1).project(g)  # an orthogonal transform: exact
    assert torch.allclose(nn.functional.normalize(full, dim=1) @ nn.functional.normalize(full, dim=1).T, exact, atol=1e-9)
    for kind in ("gaussian", "srdct"):
        p = Projector(kind, 3000, 2048, 1).project(g)
        approx = nn.functional.normalize(p, dim=1) @ nn.functional.normalize(p, dim=1).T
        assert (approx - exact).abs().max() < 0.1, kind
        again = Projector(kind, 3000, 2048, 1).project(g[:2])
        assert torch.allclose(again, p[:2], atol=1e-4)  # seeded: the same map in any batch
    with pytest.raises(SongtraceError, match="projection"):
        Projector("bogus", 10, 4, 0)


def test_gradient_cosine_matches_exact_gradients_when_k_is_large(data, dit):
    method = get_method("gradient", model=dit, dim=1 << 20, projection="srdct", n_timesteps=2)
    batch = data.latents.batch(list(range(len(data))))
    g = method.gradients(batch)
    exact = nn.functional.normalize(g.double(), dim=1)
    q = QueryItem.from_latents(data.latents, data.ids[5], query_id="q5")
    s = method.score(q, data)
    assert np.allclose(s, (exact @ exact[5]).numpy(), atol=1e-6)
    assert int(np.argmax(s)) == 5
    small = get_method("gradient", model=dit, dim=256, projection="gaussian", n_timesteps=2)
    s2 = small.score(q, data)
    assert np.abs(s2 - s).max() < 0.25 and int(np.argmax(s2)) == 5
    trak = get_method("gradient", model=dit, dim=64, normalize="trak", n_timesteps=2)
    assert np.all(np.isfinite(trak.score(q, data)))

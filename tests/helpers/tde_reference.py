"""Eq. 7, 8 and 9 written out by hand with plain torch (reference for the tests)."""
import torch


def eq7(w, x, tau=16.0, gamma=1 / 32, k=2):
    """Eq. 7 by hand: (tau/K) sum_k w_i^k.x^k / ((|w_i^k| + gamma) |x^k|)."""
    xs, ws = x.view(len(x), k, -1), w.view(len(w), k, -1)
    num = torch.einsum("nkh,ckh->nck", xs, ws)
    den = (ws.norm(dim=-1)[None] + gamma) * xs.norm(dim=-1)[:, None]
    return tau / k * (num / den).sum(-1)


def eq8(w, x, x_bar, alpha, tau=16.0, gamma=1 / 32, k=2):
    """Eq. 8 by hand: eq. 7 - alpha (tau/K) sum_k cos(x^k, d^k) w_i^k.d^k / (|w_i^k| + gamma)."""
    xs, ws = x.view(len(x), k, -1), w.view(len(w), k, -1)
    d = x_bar.view(k, -1) / x_bar.view(k, -1).norm(dim=-1, keepdim=True)
    cos = (xs / xs.norm(dim=-1, keepdim=True) * d).sum(-1)  # [N, K]
    wd = (ws * d).sum(-1) / (ws.norm(dim=-1) + gamma)  # [C, K]
    return eq7(w, x, tau, gamma, k) - alpha * tau / k * torch.einsum("nk,ck->nc", cos, wd)


def eq9(z, t):
    """Eq. 9 by hand with plain softmax (background last)."""
    p, q = torch.softmax(z, 1), torch.softmax(t, 1)
    out = (1 - p[:, -1:]) * q / (1 - q[:, -1:])
    out[:, -1] = p[:, -1]
    return out

"""Adam over the model's three parameter groups, and the learning-rate schedule."""
import math

import torch

from hashencoder import HashEncoder


def lr_factor(step, total_steps, warmup_steps, final_ratio):
    """Linear warm-up, then cosine decay to `final_ratio` of the base learning rate (as NeuS)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(total_steps - warmup_steps, 1))
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model, train, device):
    """Adam (train: config.TrainConfig); the hash-grid embeddings (SDF and background) get no weight decay (decay would erase
    rarely-seen cells), the NeuS variance a smaller learning rate.

    On CUDA it is fused (one kernel; the grad scaler skips a non-finite step without waiting for the GPU) and
    capturable with learning rates in device tensors, so that a step can be replayed as a CUDA graph: set them
    with `set_lr`."""
    encoding = [p for m in model.modules() if isinstance(m, HashEncoder) for p in m.parameters()]
    encoding_ids = {id(p) for p in encoding}
    networks = [p for n, p in model.named_parameters() if id(p) not in encoding_ids and n != "variance"]
    groups = [
        {"params": encoding, "base_lr": train.lr, "weight_decay": 0.0},
        {"params": networks, "base_lr": train.lr, "weight_decay": train.weight_decay},
        {"params": [model.variance], "base_lr": train.lr * train.variance_lr_ratio, "weight_decay": 0.0},
    ]
    for group in groups:
        group["lr"] = group["base_lr"]
    place_param_groups(groups, device)
    cuda = torch.device(device).type == "cuda"
    return torch.optim.Adam(groups, lr=train.lr, betas=(0.9, 0.99), eps=1e-15, fused=cuda, capturable=cuda)


def place_param_groups(groups, device):
    """Adam group settings for `device` (before building the optimizer, and after loading a checkpoint made on
    another device): on CUDA fused and capturable, with each group's learning rate in a device tensor of its
    own (a shared one would tie the groups' rates); elsewhere plain floats."""
    cuda = torch.device(device).type == "cuda"
    for group in groups:
        group.update(fused=cuda, capturable=cuda)
        group["lr"] = torch.tensor(float(group["lr"]), device=device) if cuda else float(group["lr"])


def set_lrs(optimizer, factor):
    """Every group's learning rate to its base rate x factor (in place: a captured graph sees it)."""
    for group in optimizer.param_groups:
        value = group["base_lr"] * factor
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(value)
        else:
            group["lr"] = value

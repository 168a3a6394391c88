"""Adam for channels-last weights: the optimiser the speed layer swaps in.

torch's fused CPU Adam kernel works on contiguous memory: it copies every
channels-last weight, its gradient and both moments to contiguous tensors and
the results back, seven copies per weight per step (2-3 % of a training step
here, most of it on the 512x512x4x4 weights). A channels-last tensor is a
contiguous block of memory seen through permuted dimensions, and Adam is
elementwise, so handing the kernel the un-permuted view of each tensor gives
the same update, in place, without the copies.
"""
import torch


def _as_contiguous_view(t: torch.Tensor) -> torch.Tensor | None:
    """The contiguous (N, H, W, C) view of a channels-last 4-D tensor, else None."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1)
    return None


class ChannelsLastAdam(torch.optim.Adam):
    """`torch.optim.Adam` whose fused kernel gets channels-last tensors as contiguous views.

    Same arguments, state dict and updates as Adam; only the tensors handed to
    the kernel for one step change. A weight whose gradient or moments are in
    another layout (a checkpoint from the plain path, say) goes as it is.
    """

    def _init_group(self, group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps):
        has_complex = super()._init_group(group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs,
                                          state_steps)
        lists = [params, grads, exp_avgs, exp_avg_sqs] + ([max_exp_avg_sqs] if group["amsgrad"] else [])
        for i in range(len(params)):
            views = [_as_contiguous_view(tensors[i]) for tensors in lists]
            if all(v is not None for v in views):
                for tensors, view in zip(lists, views):
                    tensors[i] = view
        return has_complex

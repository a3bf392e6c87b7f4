"""π* builders: behavioural cloning from recorded games and the clones of experts' demonstrations.

RL pre-training from FAR starts is the fine-tuning trainer itself (``lit_rl.training``) run with
no ``pretrained`` policy; what lives here is every other way of making π*.
"""

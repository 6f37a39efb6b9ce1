"""Plain-torch pieces of training shared by both stages: losses, optimiser parameter groups, LR schedules."""

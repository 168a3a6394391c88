"""The Visdom dashboard, and the quiet display used without one."""

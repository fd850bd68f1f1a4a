"""Built-in tools (reminders and timers, date and time, painting, image search) and their deterministic fast path.

`register_tools` offers the tools to dialogue engines that can call tools; `register_turn_routers`
adds the fast path, which runs the same tools for sentences its templates know, with no model.
"""

from __future__ import annotations

from assistant import hookimpl

from .fast_path import FastPathRouter
from .tools import TOOLS


@hookimpl
def register_tools(register):
    """Register every built-in tool."""
    for function in TOOLS:
        register(function)


@hookimpl
def register_turn_routers(register):
    """Register the fast path (before the keyword image router, which is registered last)."""
    register("builtin_tools_fast_path", FastPathRouter())

"""rsft's Hydra launcher on Ray (``hydra/launcher=ray``). Hydra takes launchers only from the ``hydra_plugins``
namespace package, so it lives here rather than under ``rsft``."""

from visec.engine.engine import Engine, build_module

__all__ = ["Engine", "build_module"]

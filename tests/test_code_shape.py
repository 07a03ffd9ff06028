"""No function or method in the package is longer than MAX_FUNCTION_LINES: a longer one does several jobs, and is
split into functions named for them. Lines count from the `def` (decorators aside) to the last line of the body,
docstring and comments included."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("ganforge", "engine", "models", "kernels", "bench")
MAX_FUNCTION_LINES = 80


def long_functions(root=ROOT, limit=MAX_FUNCTION_LINES):
    """'path:line name (N lines)' for every function over ``limit`` lines in the package's source under ``root``."""
    found = []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > limit:
                        found.append(f"{path.relative_to(root).as_posix()}:{node.lineno} {node.name} "
                                     f"({length} lines)")
    return found


def test_no_function_is_longer_than_the_limit():
    assert long_functions() == []


def test_the_check_names_a_function_one_line_over_the_limit(tmp_path):
    """The checker itself: a function of limit + 1 lines is named, one of exactly the limit is not."""
    (tmp_path / "engine").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1))
    (tmp_path / "engine" / "planted.py").write_text(f"def fits():\n{body}\n\n\ndef too_long():\n{body}\n    return 0\n")
    assert long_functions(tmp_path) == [
        f"engine/planted.py:{MAX_FUNCTION_LINES + 3} too_long ({MAX_FUNCTION_LINES + 1} lines)"]

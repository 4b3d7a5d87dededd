"""The package's imports flow one way: no module of xmc_gan_jax imports (directly or through others) itself, and
the package never imports the top-level `configs` or `tools`."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "xmc_gan_jax"


def import_graph(package: pathlib.Path) -> dict[str, set[str]]:
  """Module name -> the package modules it imports (function-level imports included)."""
  root = package.parent
  graph = {}
  for path in package.rglob("*.py"):
    name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module:
        deps.add(node.module)
        deps.update(f"{node.module}.{alias.name}" for alias in node.names)
      elif isinstance(node, ast.Import):
        deps.update(alias.name for alias in node.names)
    graph[name] = deps
  return {name: {d for d in deps if d in graph and d != name} | {d for d in deps if d.split(".")[0] in
                                                                  ("configs", "tools")}
          for name, deps in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of the graph as [a, b, ..., a], or None."""
  state: dict[str, int] = {}

  def visit(node, stack):
    state[node] = 1
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == 1:
        return stack[stack.index(dep):] + [dep]
      if dep in graph and not state.get(dep):
        found = visit(dep, stack + [dep])
        if found:
          return found
    state[node] = 2
    return None

  for node in sorted(graph):
    if not state.get(node):
      found = visit(node, [node])
      if found:
        return found
  return None


def test_find_cycle_finds_one():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_package_has_no_import_cycle():
  cycle = find_cycle(import_graph(PACKAGE))
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_package_does_not_import_configs_or_tools():
  outside = {name: sorted(d for d in deps if d.split(".")[0] in ("configs", "tools"))
             for name, deps in import_graph(PACKAGE).items()}
  assert not {k: v for k, v in outside.items() if v}

"""The package's layering: modules import only from notebooks earlier in the course (no cycles, nothing upward), no notebook before
the command line imports it, and nothing outside the environment touches its private state."""
import ast, json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG, NBS = ROOT / 'eagle_nb', ROOT / 'nbs'


def module_order()->dict:
    "module name -> the number of the notebook it is exported from."
    out = {}
    for f in PKG.glob('*.py'):
        m = re.search(r'File to edit: \.\./nbs/(\d+)_\w+\.ipynb', f.read_text())
        if m: out[f.stem] = int(m.group(1))
    return out


def runtime_imports(f:Path)->set:
    "eagle_nb modules imported at run time (not under `if TYPE_CHECKING:`)."
    tree = ast.parse(f.read_text()); skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and 'TYPE_CHECKING' in ast.unparse(node.test): skip |= {id(n) for n in ast.walk(node)}
    mods = set()
    for node in ast.walk(tree):
        if id(node) in skip: continue
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module: mods.add(node.module.split('.')[0])
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('eagle_nb.'): mods.add(node.module.split('.')[1])
    return mods


def test_every_module_imports_only_earlier_notebooks():
    order = module_order()
    assert {'core', 'utils', 'llm', 'environment', 'stack', 'surrogate', 'training', 'cli'} <= set(order)
    bad = [(m, d, order[m], order.get(d)) for m in order for d in runtime_imports(PKG / f'{m}.py') if d in order and order[d] > order[m]]
    assert not bad, f"upward imports (module, imports, its notebook, their notebook): {bad}"


def test_no_import_cycles():
    order = module_order(); graph = {m: runtime_imports(PKG / f'{m}.py') & set(order) for m in order}
    seen, stack = set(), set()
    def visit(m):
        assert m not in stack, f"import cycle through {m}"
        if m in seen: return
        stack.add(m); [visit(d) for d in graph[m]]; stack.discard(m); seen.add(m)
    for m in graph: visit(m)


def test_no_notebook_before_the_command_line_imports_it():
    for nb in sorted(NBS.glob('[0-9][0-9]_*.ipynb')):
        if int(nb.name[:2]) >= 14: continue
        code = '\n'.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code')
        assert not re.search(r'(from|import)\s+eagle_nb\.cli\b', code), nb.name


@pytest.mark.parametrize('pattern', [r'\._apply\(', r'env\.states\s*=[^=]', r'\.states\[\d*\]\s*=[^=]'])
def test_nothing_outside_the_environment_writes_its_state(pattern):
    for f in PKG.glob('*.py'):
        if f.stem in ('environment', 'surrogate', '_modidx'): continue            # the environment and its subclass
        assert not re.search(pattern, f.read_text()), (f.name, pattern)


def test_exported_code_lines_stay_under_120_characters():
    "One statement per line, lines under ~120 characters; nbdev's generated `__all__` lists are its own layout."
    long = [f"{p.name}:{i}" for p in PKG.glob('*.py') if p.name != '_modidx.py'
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if len(line) > 120 and not line.startswith('__all__')]
    assert not long, long

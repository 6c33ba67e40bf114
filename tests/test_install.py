"""Installation and packaging: the package imports, its modules match the notebooks, the CLI is declared."""
import configparser, importlib, json, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_import_and_version():
    import eagle_nb
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini')
    assert eagle_nb.__version__ == cfg['DEFAULT']['version']

def test_every_notebook_module_is_exported_and_importable():
    "Each `#| default_exp m` notebook has an importable eagle_nb.m whose header names that notebook."
    for nb in sorted((ROOT / 'nbs').glob('*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        exp = [m.group(1) for c in cells if c['cell_type'] == 'code'
               for m in [re.search(r'#\|\s*default_exp\s+(\S+)', ''.join(c['source']))] if m]
        for mod in exp:
            py = ROOT / 'eagle_nb' / (mod.replace('.', '/') + '.py')
            assert py.exists(), f'{nb.name} exports {mod} but {py} is missing: run nbdev_export'
            assert nb.name in py.read_text().splitlines()[2], f'{py} does not come from {nb.name}'
            importlib.import_module(f'eagle_nb.{mod}')

def test_quarto_config_at_top_level_drives_nbdev():
    "The card puts _quarto.yml at the top level; nbdev reads nbs/_quarto.yml, a link to it."
    link = ROOT / 'nbs' / '_quarto.yml'
    assert (ROOT / '_quarto.yml').is_file() and link.is_symlink()
    assert link.resolve() == (ROOT / '_quarto.yml').resolve()

def test_readme_is_generated_from_index():
    r = subprocess.run([sys.executable, str(ROOT / '.ci' / 'readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr

def test_readme_holds_exactly_two_setup_commands():
    blocks = re.findall(r'```bash\n(.*?)\n```', (ROOT / 'README.md').read_text(), re.S)
    assert len(blocks) == 2
    assert blocks[0].rstrip().endswith('eagle run') and 'nbdev_test' in blocks[1] and 'pytest' in blocks[1]

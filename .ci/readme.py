#!/usr/bin/env python3
"""Write README.md from nbs/index.ipynb (what `nbdev_readme` does through Quarto, which these machines lack).

`python .ci/readme.py` writes it; `python .ci/readme.py --check` exits 1 if README.md is out of date.
Hidden cells (`#| hide`) are skipped, directives are stripped, text outputs are kept, images are left out.
"""
import json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
DIRECTIVE = re.compile(r'^\s*#\s*\|')

def cell_src(cell): return ''.join(cell['source'])

def render(nb_path):
    nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    out = []
    for cell in nb['cells']:
        src = cell_src(cell)
        lines = src.splitlines()
        if any(re.match(r'^\s*#\s*\|\s*(hide|exporti?|default_exp)\b', l) for l in lines): continue
        if cell['cell_type'] == 'markdown':
            # the notebook links to sibling notebooks; from the repository root they live in nbs/
            out.append(re.sub(r'\]\((\d\d_[\w]+\.ipynb)\)', r'](nbs/\1)', src.strip())); continue
        code = '\n'.join(l for l in lines if not DIRECTIVE.match(l)).strip()
        if not code: continue
        out.append(f"```python\n{code}\n```")
        for o in cell.get('outputs', []):
            text = ''.join(o.get('text', '')) if o.get('output_type') == 'stream' else ''.join(o.get('data', {}).get('text/plain', ''))
            if text.strip(): out.append('    ' + text.rstrip('\n').replace('\n', '\n    '))
    return '<!-- generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file -->\n\n' + '\n\n'.join(out) + '\n'

if __name__ == '__main__':
    text = render(root / 'nbs' / 'index.ipynb')
    readme = root / 'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text(encoding='utf-8') != text:
            print('README.md is out of date with nbs/index.ipynb: run `python .ci/readme.py`'); sys.exit(1)
        print('README.md matches nbs/index.ipynb')
    else:
        readme.write_text(text, encoding='utf-8'); print(f'wrote {readme}')

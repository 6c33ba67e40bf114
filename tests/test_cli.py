"""The `eagle` command line: bad configs end with a one-line error and exit 2; a real run writes the results folder."""
import os, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
from eagle_nb.cli import main, load_config
from eagle_nb.core import ConfigError

# a training stage small enough for a test: 3 iterations of 4 episodes, tiny anchor pools
TINY_TRAIN = [x for kv in ['train.iterations=3', 'train.episodes=4', 'train.minibatch=4', 'train.n_train_anchors=8', 'train.n_eval_anchors=4',
                            'train.ref_epochs=2', 'train.eval_every=2', 'train.eval_seeds=1', 'train.checkpoint_every=1'] for x in ('--set', kv)]

EAGLE = [sys.executable, '-c', 'import sys; from eagle_nb.cli import main; sys.exit(main())']


def run_cli(*args, env=None):
    return subprocess.run(EAGLE + list(args), capture_output=True, text=True, env={**os.environ, 'HF_HUB_OFFLINE': '1', **(env or {})}, timeout=900)


@pytest.mark.parametrize('text, message', [
    ('reward:\n  lamda: 1\n', "config.reward: unknown key(s) ['lamda']"),
    ('latent:\n  k: sixteen\n', 'config.latent.k: expected int'),
    ('latent: [1, 2]\n', 'config.latent: expected a mapping'),
    ('- just\n- a list\n', 'the top level must be a mapping'),
    ('reward: {lam: 1\n', 'is not valid YAML'),
    ('bogus:\n  x: 1\n', "config: unknown key(s) ['bogus']"),
    ('encoder:\n  test_frac: 1.5\n', 'test_frac must be in (0, 1)'),
    ('env:\n  reward: sparse\n', "reward must be 'terminal' or 'delta'"),
    ('llm:\n  batch_size: 0\n', 'batch_size >= 1'),
])
def test_bad_config_file(tmp_path, capsys, text, message):
    f = tmp_path / 'c.yaml'; f.write_text(text)
    assert main(['run', str(f), '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('eagle: error:') and message in err and 'Traceback' not in err
    assert not (tmp_path / 'out').exists()                      # nothing ran


def test_missing_config_file(tmp_path, capsys):
    assert main(['run', str(tmp_path / 'nope.yaml')]) == 2
    assert 'config file not found' in capsys.readouterr().err


def test_bad_override(capsys):
    assert main(['config', '--set', 'reward.lam']) == 2
    assert 'section.key=value' in capsys.readouterr().err


def test_config_command_prints_resolved_yaml(capsys):
    assert main(['config', '--set', 'reward.lam=2', '--set', 'run.device=cpu']) == 0
    out = capsys.readouterr().out
    assert 'lam: 2.0' in out and 'device: cpu' in out


def test_missing_dataset_folder_is_a_clear_error(tmp_path):
    r = run_cli('run', '--set', f'data.dataset={tmp_path}/no-such-movielens', '--out', str(tmp_path / 'o'))
    assert r.returncode == 2, r.stderr[-2000:]
    assert 'MovieLens folder not found' in r.stderr and 'Traceback' not in r.stderr


def test_partial_section_keeps_the_main_configs_defaults():
    cfg = load_config(overrides=['env.horizon=2'])              # the env section given in part
    assert cfg.env.horizon == 2 and (cfg.env.proposals, cfg.env.transitions) == ('templates', 'append')


def test_yaml_config_values_reach_the_run():
    cfg = load_config(overrides=['latent.k=8', 'reward.lam=0'])
    assert cfg.latent.k == 8 and cfg.reward.lam == 0.0
    with pytest.raises(ConfigError):
        load_config(overrides=['reward.lam=-1'])


def test_eagle_run_end_to_end_writes_results_and_reuses_caches(tmp_path):
    """The main job on the defaults (small anchor count): results folder complete; a second run hits every cache."""
    out = tmp_path / 'results'
    fast = ['--set', 'run.device=cpu', '--set', 'run.n_anchors=8', '--set', 'llm.model=tiny', '--set', 'run.n_rollouts=2', '--set', 'env.horizon=2'] + TINY_TRAIN
    r1 = run_cli('run', '--out', str(out), *fast)
    assert r1.returncode == 0, r1.stderr[-3000:]
    for f in ['results.md', 'metrics.csv', 'anchors.csv', 'rollouts.md', 'rollouts.csv', 'config.yaml', 'figures/anchor_utilities.png',
              'train_eval.csv', 'train_metrics.csv', 'figures/learning_curve.png', 'figures/utility_before_after.png', 'figures/trajectories.png']:
        assert (out / f).exists(), f
    md = (out / 'results.md').read_text()
    assert '![trajectories](figures/trajectories.png)' in md and '*Before:*' in md and '*After:*' in md
    m = pd.read_csv(out / 'metrics.csv').iloc[0]
    assert m.movies == 1682 and m.rmse_als < m.rmse_bias < m.rmse_global_mean
    assert m.train_iterations == 3 and all(pd.notna(m[k]) for k in ('U_H_random', 'U_H_reference', 'U_H_agent'))
    assert 'EAGLE agent' in (out / 'results.md').read_text()
    a = pd.read_csv(out / 'anchors.csv')
    assert len(a) == 8 and a['U(text)'].notna().all()
    ro = pd.read_csv(out / 'rollouts.csv')
    assert len(ro) == 2 and ro['edits'].str.count(r'\|').eq(1).all() and m.rollouts == 2 and 0 <= m.transition_fallback_rate <= 1
    assert (ro['distance'] >= 0).all() and 'path' not in ro
    r2 = run_cli('run', '--out', str(tmp_path / 'again'), *fast)
    assert r2.returncode == 0
    assert 'latent space: cached' in r2.stderr and 'encoder: cached' in r2.stderr
    assert 'reference policy (G-optimal) from cache' in r2.stderr and 'resumed from' in r2.stderr   # the finished training run is reused
    pd.testing.assert_frame_equal(a, pd.read_csv(tmp_path / 'again' / 'anchors.csv'))   # deterministic
    pd.testing.assert_frame_equal(ro, pd.read_csv(tmp_path / 'again' / 'rollouts.csv'))

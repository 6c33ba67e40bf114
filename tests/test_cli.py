"""The `eagle` command line: bad input ends with a one-line error and exit 2 before any work; a real run writes the results folder."""
import json, os, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
from eagle_nb.cli import main, load_config, bench_table
from eagle_nb.utils import ConfigError

# a run small enough for a test: the tiny random LLM (a test fixture), H = 2, 2 seeds of 3 iterations in replay trees, tiny anchor pools
TINY = [x for kv in ['run.device=cpu', 'run.n_anchors=6', 'llm.model=tiny', 'env.horizon=2', 'train.iterations=3', 'train.replay_heldout=2',
                     'train.episodes=4', 'train.minibatch=4', 'train.n_train_anchors=4', 'train.n_eval_anchors=3', 'train.ref_epochs=2',
                     'train.checkpoint_every=1', 'run.seeds=2'] for x in ('--set', kv)]

EAGLE = [sys.executable, '-c', 'import sys; from eagle_nb.cli import main; sys.exit(main())']


def run_cli(*args, env=None):
    return subprocess.run(EAGLE + list(args), capture_output=True, text=True, env={**os.environ, 'HF_HUB_OFFLINE': '1', **(env or {})}, timeout=1200)


def one_line_error(r, message):
    "Exit code 2, one line on stderr that starts with 'eagle: error:' and holds the message, no traceback."
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert r.stderr.startswith('eagle: error:') and r.stderr.count('\n') == 1 and message in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize('text, message', [
    ('reward:\n  lamda: 1\n', "config.reward: unknown key(s) ['lamda']"),
    ('latent:\n  k: sixteen\n', 'config.latent.k: expected int'),
    ('latent: [1, 2]\n', 'config.latent: expected a mapping'),
    ('- just\n- a list\n', 'the top level must be a mapping'),
    ('reward: {lam: 1\n', 'is not valid YAML'),
    ('bogus:\n  x: 1\n', "config: unknown key(s) ['bogus']"),
    ('encoder:\n  test_frac: 1.5\n', 'test_frac must be in (0, 1)'),
    ('encoder:\n  finetune_layers: -3\n', 'finetune_layers must be -1 (all of the backbone)'),
    ('encoder:\n  finetune_layers: -1\n  epochs: 0\n', 'with encoder.epochs >= 1'),
    ('env:\n  reward: sparse\n', "reward must be 'terminal' or 'delta'"),
    ('env:\n  n_macro: 9\n', 'n_macro must be in 0..6 (pairs of the 4 single candidates)'),
    ('llm:\n  batch_size: 0\n', 'batch_size must be >= 1'),
    ('reward:\n  lam: 1\nreward:\n  k: 5\n', "line 3: key 'reward' appears twice (first on line 1)"),   # the last one used to win
    ('reward: {lam: .nan}\n', 'config.reward.lam: expected a finite number, got nan'),
    ('latent: {side_lam: .inf}\n', 'config.latent.side_lam: expected a finite number'),
    ('encoder:\n  kind: ridge\n', "encoder.kind must be 'neighbours' or 'regression'"),
    ('env:\n  horizon: 5\n  n_generic: 3\n',       # K = 5, H = 5: 3905 transitions below each of 10 + 4 roots
     'replay trees too large: 14 roots x (K + ... + K^H with K=5, H=5) = 54670 transitions > the budget of 20000'),
    ('train:\n  dyna_iterations: 5\n', 'replay trains on replayed real transitions only: set dyna_iterations=0'),
    ('train:\n  train_split: test\n', "train_split must be 'encoder-train' or 'held-out'"),
    ('train:\n  replay_heldout: 30\n', 'replay_heldout must be in 1..n_eval_anchors (20)'),
])
def test_bad_config_file(tmp_path, capsys, text, message):
    f = tmp_path / 'c.yaml'; f.write_text(text)
    assert main(['run', str(f), '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('eagle: error:') and message in err and 'Traceback' not in err and err.count('\n') == 1
    assert not (tmp_path / 'out').exists()                      # nothing ran


def test_missing_config_file(tmp_path, capsys):
    assert main(['run', str(tmp_path / 'nope.yaml')]) == 2
    assert 'config file not found' in capsys.readouterr().err


def test_a_folder_given_as_the_config_file(tmp_path):
    one_line_error(run_cli('run', str(tmp_path), '--out', str(tmp_path / 'o')), 'is a folder, not a YAML file')   # was IsADirectoryError
    one_line_error(run_cli('config', '--set', 'reward.lam=.nan'), 'expected a finite number')


def test_bad_override(capsys):
    assert main(['config', '--set', 'reward.lam']) == 2
    assert 'section.key=value' in capsys.readouterr().err


def test_config_command_prints_resolved_yaml(capsys):
    assert main(['config', '--set', 'reward.lam=2', '--set', 'run.device=cpu']) == 0
    out = capsys.readouterr().out
    assert 'lam: 2.0' in out and 'device: cpu' in out and 'transitions: llm' in out


# errors up front: each is one line, exit 2, before the first stage (no cache or results folder is touched)
def test_missing_dataset_folder(tmp_path):
    one_line_error(run_cli('run', '--set', f'data.dataset={tmp_path}/no-such-movielens', '--out', str(tmp_path / 'o')), 'neither a shipped dataset')
    (tmp_path / 'ml').mkdir(); (tmp_path / 'ml' / 'movies.csv').write_text('movieId,title,genres\n')
    one_line_error(run_cli('run', '--set', f'data.dataset={tmp_path}/ml', '--out', str(tmp_path / 'o')), 'has no ratings.csv')
    assert not (tmp_path / 'o').exists()


def _movielens(folder, n_movies=300, titles=True, shift_ids=False, cut=False):
    "A MovieLens CSV folder from ml-100k's first movies, made bad on purpose."
    from eagle_nb.data import load_catalog
    cat = load_catalog('ml-100k', metadata=False)
    m, r = cat.movies.head(n_movies), cat.ratings[cat.ratings.item < n_movies]
    folder.mkdir(parents=True)
    title = [f"{t} ({y})" if titles else '' for t, y in zip(m.title, m.year.fillna(1990))]
    pd.DataFrame({'movieId': m.movie_id, 'title': title, 'genres': ['|'.join(g) for g in m.genres]}).to_csv(folder / 'movies.csv', index=False)
    ids = m.movie_id.to_numpy()[r.item.to_numpy()] + (100_000 if shift_ids else 0)
    text = pd.DataFrame({'userId': r.user.to_numpy() + 1, 'movieId': ids, 'rating': r.rating.to_numpy(), 'timestamp': r.timestamp.to_numpy()}).to_csv(index=False)
    (folder / 'ratings.csv').write_text(text[:-5] if cut else text)
    return folder


@pytest.mark.parametrize('bad, message', [
    (dict(cut=True), 'last line is cut short'),                               # an interrupted download
    (dict(shift_ids=True), 'no rating refers to a known movie'),    # every rating names a movie movies.csv lacks
    (dict(titles=False), 'movies.csv: line 2: movie 1 has an empty title (300 such rows)'),
])
def test_bad_ratings_or_movies_files_end_before_any_fitting(tmp_path, bad, message):
    folder = _movielens(tmp_path / 'ml', **bad)
    r = run_cli('run', '--set', f'data.dataset={folder}', '--set', 'llm.model=tiny', '--out', str(tmp_path / 'o'))
    one_line_error(r, message)
    assert not (tmp_path / 'o').exists()                        # nothing was written, nothing was fitted


@pytest.mark.parametrize('change, message', [
    (lambda r: r.assign(rating=r.rating * 10), "ratings.csv: line 2: rating "),
    (lambda r: r.assign(rating=[-3.0 if i % 20 == 7 else x for i, x in enumerate(r.rating)]), 'line 9: rating -3 is outside MovieLens'),
    (lambda r: pd.concat([r, r.head(2000).assign(rating=0.5)]), 'rates movie'),                 # 2,000 pairs rated twice
    (lambda r: r.astype({'rating': object}).assign(rating=['abc' if i == 30 else x for i, x in enumerate(r.rating)]), "line 32: rating 'abc' is not a number"),
])
def test_ratings_that_parse_but_are_wrong_end_before_any_fitting(tmp_path, change, message):
    folder = _movielens(tmp_path / 'ml')
    change(pd.read_csv(folder / 'ratings.csv')).to_csv(folder / 'ratings.csv', index=False)
    r = run_cli('run', '--set', f'data.dataset={folder}', '--set', 'llm.model=tiny', '--out', str(tmp_path / 'o'))
    one_line_error(r, message)
    assert 'ratings.csv' in r.stderr and not (tmp_path / 'o').exists()
    if 'rating 50' in message or 'line 2: rating ' in message:
        assert "outside MovieLens' scale of 0.5 to 5 stars" in r.stderr and 'such rows' in r.stderr


def test_one_untitled_movie_is_named_by_its_line(tmp_path):
    folder = _movielens(tmp_path / 'ml')
    movies = pd.read_csv(folder / 'movies.csv'); movies.loc[41, 'title'] = ''
    movies.to_csv(folder / 'movies.csv', index=False)
    one_line_error(run_cli('run', '--set', f'data.dataset={folder}', '--set', 'llm.model=tiny', '--out', str(tmp_path / 'o')),
                   f"movies.csv: line 43: movie {movies.movieId[41]} has an empty title")


def test_a_catalogue_with_a_few_known_movies_names_what_was_lost(tmp_path):
    folder = _movielens(tmp_path / 'ml', shift_ids=True)
    ratings = pd.read_csv(folder / 'ratings.csv')
    ratings.loc[:99, 'movieId'] -= 100_000                      # 100 ratings name known movies, the rest do not
    ratings.to_csv(folder / 'ratings.csv', index=False)
    r = run_cli('run', '--set', f'data.dataset={folder}', '--set', 'llm.model=tiny', '--out', str(tmp_path / 'o'))
    one_line_error(r, 'ratings name movies that the movies table lacks')


def test_empty_or_truncated_model_folder_is_reported_before_any_work(tmp_path):
    (tmp_path / 'empty').mkdir()
    r = run_cli('run', '--set', f'llm.model={tmp_path / "empty"}', '--out', str(tmp_path / 'o'), env={'EAGLE_CACHE': str(tmp_path / 'cache')})
    one_line_error(r, 'config.json missing')
    assert not (tmp_path / 'cache' / 'latent').exists()          # no stage ran
    m = tmp_path / 'half'; m.mkdir(); (m / 'config.json').write_text('{"model_type": "llama"}'); (m / 'tokenizer.json').write_text('{}')
    (m / 'model.safetensors').write_bytes((8).to_bytes(8, 'little') + b'{"a": 1}')
    one_line_error(run_cli('run', '--set', f'llm.model={m}', '--out', str(tmp_path / 'o')), 'model.safetensors')


def test_bad_device(tmp_path):
    one_line_error(run_cli('run', '--set', 'run.device=tpu:3', '--out', str(tmp_path / 'o')), 'is not a device')
    one_line_error(run_cli('run', '--set', 'run.device=cuda:7', '--out', str(tmp_path / 'o')), 'cuda')


def test_missing_backbone_folder(tmp_path):
    one_line_error(run_cli('run', '--set', f'encoder.backbone={tmp_path}/none', '--out', str(tmp_path / 'o')), 'not a sentence-transformers folder')


@pytest.mark.skipif(os.geteuid() == 0, reason='root can write anywhere')
def test_unwritable_output_and_cache_folders(tmp_path):
    ro = tmp_path / 'ro'; ro.mkdir(); ro.chmod(0o500)
    one_line_error(run_cli('run', '--out', str(ro / 'results')), 'run.out')
    one_line_error(run_cli('run', '--out', str(tmp_path / 'o'), env={'EAGLE_CACHE': str(ro / 'cache')}), 'not writable')


def test_output_path_that_is_a_file(tmp_path):
    f = tmp_path / 'a-file'; f.write_text('x')
    one_line_error(run_cli('run', '--out', str(f / 'results')), 'run.out')


def test_yaml_config_values_reach_the_run():
    cfg = load_config(overrides=['latent.k=8', 'reward.lam=0', 'env.horizon=5'])
    assert cfg.latent.k == 8 and cfg.reward.lam == 0.0 and cfg.env.horizon == 5 and cfg.env.transitions == 'llm'
    with pytest.raises(ConfigError):
        load_config(overrides=['reward.lam=-1'])


def test_bench_table_is_readable():
    t = bench_table({'engine': 'fast', 'ratio': 2.345678, 'workload': {'prompts': 32}})
    assert 'ratio' in t and '2.346' in t and 'workload.prompts  32' in t


def test_eagle_run_end_to_end_writes_results_and_reuses_caches(tmp_path):
    """The main job with the tiny test model: a complete results folder with the issue's columns; a second run hits every cache."""
    out = tmp_path / 'results'
    r1 = run_cli('run', '--out', str(out), *TINY)
    assert r1.returncode == 0, r1.stderr[-3000:]
    for f in ['results.md', 'metrics.csv', 'eval.csv', 'anchors.csv', 'rollouts.md', 'config.yaml', 'train_metrics.csv',
              'figures/training.png', 'figures/utility_before_after.png', 'figures/proxy_vs_judge.png', 'figures/trajectories.png',
              'known_answer.csv', 'figures/known_answer.png']:
        assert (out / f).exists(), f
    m = pd.read_csv(out / 'metrics.csv').iloc[0]
    assert m.train_environment.startswith('proposals=llm, transitions=llm')
    for k in ['paired_gain_agent_vs_reference', 'paired_gain_agent_vs_reference_ci_low', 'paired_gain_agent_vs_reference_ci_high',
              'paired_gain_agent_vs_random', 'paired_gain_agent_vs_random_ci_low', 'paired_gain_agent_vs_random_ci_high',
              'judge_paired_gain_agent_vs_reference', 'llm_action_rate', 'rewrite_accept_rate']:
        assert k in m and pd.notna(m[k]), k
    assert 'surrogate_cosine' in m and 'surrogate_r2' in m          # NaN here: the random test model's rewrites are all refused, nothing moves
    assert m.paired_gain_agent_vs_reference_ci_low <= m.paired_gain_agent_vs_reference <= m.paired_gain_agent_vs_reference_ci_high
    assert 0 <= m.llm_action_rate <= 1 and 0 <= m.rewrite_accept_rate <= 1 and m.train_seeds == 2
    assert m.movies == 1682 and m.rmse_als < m.rmse_bias < m.rmse_global_mean
    assert bool(m.encoder_passes_check) == (m['encoder_error/nn'] < 1 and m['encoder_acc@10'] >= 10 * m['encoder_chance@10'])
    assert m.judge_backbone == 'all-mpnet-base-v2' and m.latent_side_lam > 0                       # the judge of another family
    for p in ['bland_premise', 'title_only', 'praise', 'reception']:                                  # the reward's probes, both scorers
        for pre in ['probe', 'judge_probe']:
            assert pd.notna(m[f'{pre}_{p}']) and m[f'{pre}_{p}_ci_low'] <= m[f'{pre}_{p}'] <= m[f'{pre}_{p}_ci_high'], (pre, p)
    for k in ['fact_retention', 'proxy_judge_gain_corr', 'edit_following_proxy', 'edit_following_judge', 'probes_pass',
              'edit_following_latent_proxy', 'edit_following_latent_judge', 'edit_following_shuffled_proxy', 'edit_following_shuffled_judge']:
        assert k in m, k
    assert 0 <= m.fact_retention <= 1
    ev0 = pd.read_csv(out / 'eval.csv')
    for k, name in [('agent', 'EAGLE agent'), ('random', 'random edits')]:                         # gains in % of U_0
        g = ev0[ev0.method == name]
        assert abs(m[f'gain_pct_{k}'] - 100 * ((g['U end'] - g['U start']) / g['U start'].abs()).mean()) < 2e-3
    ev = pd.read_csv(out / 'eval.csv')
    assert set(ev.method) == {'random edits', 'pi_ref (uniform)', 'EAGLE agent'}
    assert len(ev[ev.method == 'EAGLE agent']) == 2 * len(ev[ev.method == 'random edits'])          # 2 seeds on the same episodes
    assert ev.groupby(['anchor', 'user'])['U start'].nunique().eq(1).all()                          # every method starts from the same state
    tm = pd.read_csv(out / 'train_metrics.csv')
    assert list(tm.groupby('seed').environment.apply(list)) == [['replay'] * 3] * 2                    # every iteration replays real transitions
    assert m.distinct_real_transitions == 4 * (4 + 16) and m.heldout_tree_transitions == 2 * (4 + 16)   # full trees, K = 4, H = 2
    assert m.real_transitions == 2 * 3 * 4 * 2                                                    # seeds x iterations x episodes x H
    assert {'gap_closed_train', 'gap_closed_heldout', 'gap_closed_train_reference'} <= set(m.index)
    assert m.judge_gain_of_optimum_ci_low <= m.judge_gain_of_optimum <= m.judge_gain_of_optimum_ci_high
    assert m.optimum_roots == 2 and m.optimum_trees == 'heldout' and m.judge_gain_of_judge_optimum >= m.judge_gain_of_optimum - 1e-9
    ka = pd.read_csv(out / 'known_answer.csv')
    assert (ka.V_optimal >= ka.V - 1e-9).all() and (ka.V_optimal >= ka.V_random - 1e-9).all()      # nothing beats the optimum
    md = (out / 'results.md').read_text()
    assert '## The known answer' in md and "The reward's exact optimum, read as a policy" in md
    assert 0 <= m.judge_story_unread <= 1 and '**Window.**' in md
    assert 'tie' in md or 'higher' in md or 'lower' in md
    assert '## What the environment did' in md and '![training](figures/training.png)' in md
    gate = "E_D **passes** the paper's check" if m.encoder_passes_check else "E_D **fails** the paper's check"
    assert gate in md.split('## The question')[0]                                                   # stated before the results
    assert '**Reward probes**' in md.split('## The question')[0] and (out / 'probes.csv').exists()
    r2 = run_cli('run', '--out', str(tmp_path / 'again'), *TINY)
    assert r2.returncode == 0, r2.stderr[-3000:]
    for s in ['latent space: cached', 'encoder (all-MiniLM-L6-v2): cached', 'encoder (all-mpnet-base-v2): cached',
              'reference policy (uniform): cached', 'resumed from', 'replay trees: 4 roots cached']:
        assert s in r2.stderr, s
    pd.testing.assert_frame_equal(ev, pd.read_csv(tmp_path / 'again' / 'eval.csv'))             # deterministic, from the caches


def test_bench_json_fields_exist_and_are_honest():
    """`eagle bench --json` with the tiny test model: one JSON object with the issue's fields, the ratio the quotient of its two
    measurements (speed itself is never checked: tests do not time)."""
    r = run_cli('bench', '--json', '--anchors', '2', '--set', 'llm.model=tiny', '--set', 'run.device=cpu', '--set', 'run.n_anchors=6')
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    for k in ['engine', 'workload', 'reference_tokens_per_s', 'engine_tokens_per_s', 'ratio', 'env_step_seconds', 'llm_action_rate',
              'rewrite_accept_rate', 'repeated_trigram_rate', 'transition_ratio', 'transitions_per_s', 'previous_transitions_per_s',
              'fact_retention', 'previous_fact_retention']:
        assert k in res, k
    for k in ['prompt_tokens', 'new_tokens', 'batch']:
        assert k in res['workload'], k
    assert res['ratio'] == pytest.approx(res['engine_tokens_per_s'] / res['reference_tokens_per_s'], rel=1e-9)
    assert res['transition_ratio'] == pytest.approx(res['transitions_per_s'] / res['previous_transitions_per_s'], rel=1e-9)
    assert res['reference_tokens_per_s'] > 0 and res['engine_tokens_per_s'] > 0 and res['env_step_seconds'] > 0
    assert 0 <= res['llm_action_rate'] <= 1 and 0 <= res['rewrite_accept_rate'] <= 1

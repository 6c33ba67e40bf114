"""The gymnasium interface (15_gym): registration on import, gymnasium's own checker on the default path with the tiny
model, one-line errors for bad settings, and the vector form's batching and next-step autoreset."""
import subprocess, sys, warnings
import numpy as np
import pytest
import gymnasium
from gymnasium.utils.env_checker import check_env
import eagle_nb  # registers eagle_nb/Eagle-v0
from eagle_nb.utils import ConfigError
from eagle_nb.llm import ModelError

ENV_ID = 'eagle_nb/Eagle-v0'


def test_import_registers_the_env_without_loading_torch():
    code = "import sys, eagle_nb, gymnasium; s = gymnasium.spec('eagle_nb/Eagle-v0'); "
    code += "print(s.entry_point, s.vector_entry_point, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ['eagle_nb.gymenv:EagleGymEnv', 'eagle_nb.gymenv:EagleVectorEnv', 'False']


@pytest.fixture(scope='module')
def tiny_env():
    env = gymnasium.make(ENV_ID, llm='tiny', render_mode='ansi')
    yield env
    env.close()


def test_check_env_passes_without_warnings(tiny_env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        check_env(tiny_env.unwrapped)
    assert [str(w.message) for w in caught if 'WARN' in str(w.message)] == []


def test_spaces_and_episode(tiny_env):
    obs, info = tiny_env.reset(seed=5)
    assert tiny_env.observation_space.contains(obs)
    assert isinstance(tiny_env.action_space, gymnasium.spaces.Discrete) and tiny_env.action_space.n == 4
    assert len(info['candidates']) == 4 and all(isinstance(c, str) and c for c in info['candidates'])
    horizon = tiny_env.unwrapped.engine.horizon
    rewards = []
    for t in range(horizon):
        obs, r, term, trunc, info = tiny_env.step(t % 4)
        rewards.append(r)
        assert term == (t == horizon - 1) and trunc is False
    assert rewards[:-1] == [0.0] * (horizon - 1) and rewards[-1] == info['utility']['total']
    assert info['candidates'] == [] and 'edit' in info and isinstance(info['accepted'], bool)
    assert tiny_env.render().startswith(f't={horizon}/{horizon}')
    with pytest.raises(RuntimeError, match='episode is over'):
        tiny_env.step(0)


def test_options_choose_movie_and_viewer(tiny_env):
    obs, info = tiny_env.reset(seed=0, options={'anchor': 11, 'user': 3})
    assert (info['anchor'], info['user'], info['t']) == (11, 3, 0)
    assert obs['text'] == tiny_env.unwrapped.stack.texts[11]
    with pytest.raises(ValueError, match='anchor must lie in'):
        tiny_env.reset(options={'anchor': 10**6, 'user': 0})


def test_seeded_resets_draw_held_out_movies_and_unseen_viewers(tiny_env):
    env = tiny_env.unwrapped
    seen = [env.reset(seed=s)[1] for s in range(4)]
    assert all(i['anchor'] in set(env.stack.test_idx.tolist()) for i in seen)
    assert all(i['user'] not in env.rated.get(i['anchor'], set()) for i in seen)
    assert [i['anchor'] for i in seen] == [env.reset(seed=s)[1]['anchor'] for s in range(4)]


@pytest.mark.parametrize('kwargs, message', [
    (dict(llm='tiny', horizon=0), 'horizon must be >= 1'),
    (dict(llm='tiny', hoizon=3), "unknown key(s) ['hoizon']"),
    (dict(llm='/no/such/model'), 'model folder not found'),
    (dict(llm='tiny', anchors='val'), "anchors must be 'test'"),
    (dict(llm='tiny', anchors=[-1]), 'movie ids must lie in'),
    (dict(llm='tiny', render_mode='human'), 'render_mode must be None'),
    (dict(llm='tiny', overrides=['data.dataset=/no/such/folder']), 'neither a shipped dataset'),
])
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises((ConfigError, ModelError)) as e:
        gymnasium.make(ENV_ID, **kwargs)
    assert message in str(e.value) and '\n' not in str(e.value)


def test_bad_action_is_refused(tiny_env):
    tiny_env.reset(seed=0)
    with pytest.raises(ValueError, match=r'is not in Discrete\(4\)'):
        tiny_env.step(4)


def test_vector_env_steps_a_batch_and_autoresets():
    venv = gymnasium.make_vec(ENV_ID, num_envs=3, vectorization_mode='vector_entry_point', llm='tiny')
    obs, infos = venv.reset(seed=1)
    assert venv.observation_space.contains(obs) and len(obs['text']) == 3 and obs['latent'].shape[0] == 3
    engine = venv.unwrapped.engine
    for _ in range(engine.horizon):
        obs, rew, term, trunc, infos = venv.step(np.array([0, 1, 2]))
    assert term.tolist() == [True] * 3 and not trunc.any()
    assert np.allclose(rew, infos['utility']['total'])
    first = [s.anchor for s in engine.states]
    obs, rew, term, trunc, infos = venv.step(np.array([0, 0, 0]))  # next-step autoreset
    assert rew.tolist() == [0.0] * 3 and infos['t'].tolist() == [0] * 3
    assert len(infos['candidates'][0]) == venv.single_action_space.n
    assert [s.t for s in engine.states] == [0] * 3 and len(first) == 3
    with pytest.raises(ValueError, match='are not in'):
        venv.step(np.array([0, 9, 0]))

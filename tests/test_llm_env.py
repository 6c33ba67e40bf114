"""The LLM layer and the environment: crash safety of the generation cache, bad replies, bad paths, the env contract."""
import os, signal, sqlite3, subprocess, sys, textwrap, time
from pathlib import Path
import pytest
import torch
from eagle_nb.llm import GenerationCache, load_llm, HFBackend, SamplingParams, ModelError, check_model_folder
from eagle_nb.environment import EagleEnv, EnvConfig, clean_edit, check_change, fallback_rewrite, fact_retention
from eagle_nb.data import facts_of, story_of

WRITER = textwrap.dedent('''
    import sys
    from eagle_nb.llm import GenerationCache
    c = GenerationCache(sys.argv[1]); i = 0
    print('ready', flush=True)
    while True:                                   # big transactions, forever, until killed
        c.put_many({f"k{i}-{j}": f"v{i}-{j}-" + "x" * 2000 for j in range(200)}); i += 1
''')


def test_cache_survives_kill_9_mid_write(tmp_path):
    db = tmp_path / 'cache.sqlite'
    p = subprocess.Popen([sys.executable, '-c', WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'ready'
    time.sleep(1.5)                               # many transactions committed, one in flight
    os.kill(p.pid, signal.SIGKILL); p.wait()
    c = GenerationCache(db)
    assert sqlite3.connect(db).execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
    n = len(c)
    assert n > 0 and n % 200 == 0                 # only whole transactions are visible
    rows = sqlite3.connect(db).execute('SELECT key, text FROM gen').fetchall()
    assert all(t.startswith(k.replace('k', 'v', 1) + '-') and len(t) > 2000 for k, t in rows)
    c.put_many({'after': 'crash'}); assert c.get_many(['after']) == {'after': 'crash'}   # still writable


def test_cache_concurrent_reader_sees_consistent_snapshots(tmp_path):
    db = tmp_path / 'cache.sqlite'; GenerationCache(db)
    w = subprocess.Popen([sys.executable, '-c', WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    assert w.stdout.readline().strip() == 'ready'
    r = GenerationCache(db); counts = []
    t_end = time.time() + 1.5
    while time.time() < t_end: counts.append(len(r))
    w.kill(); w.wait()
    assert all(c % 200 == 0 for c in counts) and counts == sorted(counts)


def test_unusable_replies_give_no_edits():
    for reply in ['', '???', 'I am sorry, I cannot do that.', 'Make the', 'Make it ' + 'word ' * 80 + '.', 'Tell your writers to add a dog.']:
        assert clean_edit(reply) is None


def test_empty_looping_unchanged_and_fact_breaking_changes_are_rejected():
    orig = 'Heat (1995). Directed by Michael Mann.\nStory: A heist film about a crew planning one last job in Los Angeles.'
    edit = 'Turn it into a musical.'
    assert check_change('', orig, edit) == (None, 'short')
    assert check_change('In this version,   \n ', orig, edit) == (None, 'short')
    assert check_change('In this version, ' + 'musical ' * 5000 + '.', orig, edit)[1] == 'loop'
    assert check_change('In this version, the crew sings a musical number, upbeat, upbeat, upbeat, in Los Angeles.', orig, edit)[1] == 'loop'
    assert check_change('In this version, the crew plans one last job in a quiet suburb far away.', orig, edit)[1] == 'ignored'
    assert check_change('In this version, the 2021 musical remake is directed by Baz Luhrmann.', orig, edit)[1] == 'fact'
    ok, why = check_change('In this version, the crew plans the job as a Broadway musical with songs.', orig, edit)
    assert why == 'ok' and ok.endswith('songs.')
    moved = fallback_rewrite(orig, 'Make it a musical.')
    assert 'In this version, make it a musical.' in moved and facts_of(moved) == facts_of(orig) and story_of(moved).startswith(story_of(orig))
    facts = {'title': 'Heat', 'year': 1995, 'director': 'Michael Mann', 'writer': '', 'cast': [], 'runtime': '', 'rated': '', 'country': '', 'language': ''}
    assert fact_retention(facts, moved)['retention'] == 1.0
    assert fact_retention(facts, 'A heist film.')['retention'] == 0.0                       # a rewrite that dropped the facts line


def test_missing_or_broken_model_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelError, match='model folder not found'):
        load_llm(tmp_path / 'no-model')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ModelError, match='config.json missing'):
        HFBackend(tmp_path / 'empty')
    with pytest.raises(ModelError, match='config.json missing') as e:
        load_llm(tmp_path / 'empty')
    assert '\n' not in str(e.value)
    with pytest.raises(ValueError, match='unknown backend'):
        load_llm('tiny', backend='tensorrt', cache=False)


def test_bad_sampling_params():
    with pytest.raises(ValueError): SamplingParams(max_new_tokens=0)
    with pytest.raises(ValueError): SamplingParams(top_p=0)


class TinyEncoder:
    "A deterministic stand-in for E_D with the real interface: text -> R^4."
    def encode(self, texts):
        return torch.tensor([[len(t) / 100, t.count('e') / 10, t.count(' ') / 20, 1.0] for t in texts])


@pytest.fixture(scope='module')
def tiny_env_parts():
    from eagle_nb.data import load_catalog
    from eagle_nb.reward import content_gap_utility
    cat = load_catalog('ml-100k', metadata=False)
    class Lat: pass
    lat = Lat(); g = torch.Generator().manual_seed(0)
    lat.item_emb = torch.rand(50, 4, generator=g); lat.user_emb = torch.rand(5, 4, generator=g)
    return cat, content_gap_utility(lat, lam=0.5, device='cpu')


def make_env(tmp_path, parts, horizon=2):
    cat, U = parts
    llm = load_llm('tiny', device='cpu', cache=GenerationCache(tmp_path / 'c.sqlite'))
    texts = ['Sisters (2001).\nStory: A quiet drama about two sisters who run a bakery in Lyon and fall out over an inheritance.'] * 3
    cfg = EnvConfig(horizon=horizon, n_generic=2, n_personal=2, bank_generic=5, bank_personal=2, bank_users=1, bank_rounds=1,
                    propose_max_tokens=16, rewrite_max_tokens=24, max_retries=1)
    return EagleEnv(llm, TinyEncoder(), U, cat, texts, {0: 'likes drama', 1: 'likes comedy'}, cfg, bank_folder=tmp_path / 'banks', log=lambda m: None)


def test_env_contract_with_a_real_llm_backend(tmp_path, tiny_env_parts):
    "The tiny random model writes gibberish: every bank edit is a counted template fill and every rewrite is rejected, so states do not move."
    env = make_env(tmp_path, tiny_env_parts)
    obs, infos = env.reset(seed=3, options={'anchors': [0, 1], 'users': [0, 1]})
    assert len(obs) == 2 and set(obs[0]) >= {'text', 'z', 'user', 't', 'profile'} and obs[0]['z'].shape == (4,)
    cands = env.candidate_actions()
    assert [len(c) for c in cands] == [4, 4] and all(isinstance(e, str) and e for c in cands for e in c)
    b = env.banks.stats
    assert b['bank_requests'] > 0 and b['bank_edits'] == b['bank_llm'] + b['bank_template_fills'] and b['bank_template_fills'] > 0
    before = [o['text'] for o in obs]
    obs, r, term, trunc, info1 = env.step([0, 1])
    assert r.tolist() == [0.0, 0.0] and not term.any() and not trunc.any() and obs[0]['t'] == 1
    for i, o, t in zip(info1, obs, before):
        assert i['accepted'] or o['text'] == t                 # a rejected rewrite leaves the text as it was
    obs, r, term, trunc, info = env.step([1, 'Make it a musical.'])
    assert term.all() and torch.isfinite(r).all()
    assert torch.allclose(obs[1]['z'], TinyEncoder().encode([obs[1]['text']])[0])
    s = env.stats
    assert s['transitions'] == 4 and s['transition_fallbacks'] + s['accepted'] == 4
    assert s['transition_fallbacks'] == sum(not i['accepted'] for i in info1 + info)
    assert s['transition_fallbacks'] > 0 and len(env.rejected) >= s['transition_fallbacks']   # gibberish is refused and recorded
    with pytest.raises(RuntimeError, match='episode is over'):
        env.step([0, 0])


def test_env_same_seed_same_episode(tmp_path, tiny_env_parts):
    def episode(seed, folder):
        folder.mkdir()
        env = make_env(folder, tiny_env_parts)
        env.reset(seed=seed, options={'anchors': [0], 'users': [0]})
        texts = []
        for _ in range(2):
            obs, *_ = env.step([0]); texts.append(obs[0]['text'])
        return texts, env.states[0].history
    a = episode(5, tmp_path / 'a'); b = episode(5, tmp_path / 'b')
    assert a == b                                    # independent caches, identical episodes


def test_an_empty_cache_object_is_used_not_dropped(tmp_path):
    "Regression: an empty GenerationCache is falsy (len 0); LLM must keep it, and the second call must hit."
    cache = GenerationCache(tmp_path / 'c.sqlite')
    llm = load_llm('tiny', device='cpu', cache=cache)
    assert llm.cache is cache
    P = SamplingParams(max_new_tokens=8)
    a = llm.chat(['Hello there'], params=P, seeds=[1]); b = llm.chat(['Hello there'], params=P, seeds=[1])
    assert a == b and cache.stats()['hits'] == 1 and cache.stats()['misses'] == 1 and len(cache) == 1


def test_building_the_model_fixtures_leaves_the_callers_generators_untouched(tmp_path):
    "Results must not depend on whether the converted SmolLM2 and the tiny fixture were already cached."
    code = (
        "import torch\n"
        "from eagle_nb.llm import tiny_llm_path\n"
        "torch.manual_seed(123); a = torch.rand(3)\n"
        "torch.manual_seed(123); tiny_llm_path(); b = torch.rand(3)\n"   # builds SmolLM2's copy and the fixture
        "torch.manual_seed(123); tiny_llm_path(); c = torch.rand(3)\n"   # both cached now
        "print(torch.equal(a, b), torch.equal(a, c))\n"
    )
    import subprocess, sys, os
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600,
                       env={**os.environ, 'EAGLE_CACHE': str(tmp_path), 'HF_HUB_OFFLINE': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ['True', 'True'], r.stdout


def test_personalised_proposals_are_asked_with_the_viewers_profile(tmp_path, tiny_env_parts):
    """The LLM writes personalised edits from a prompt that holds the episode viewer's profile, generic ones without any;
    two viewers of the same movie get different requests and their own bank cells."""
    env = make_env(tmp_path, tiny_env_parts)
    sent = []
    chat = env.llm.chat
    def spy(prompts, *a, **k):
        sent.extend(prompts)
        return chat(prompts, *a, **k)
    env.llm.chat = spy
    env.reset(seed=0, options={'anchors': [0, 0], 'users': [0, 1]})
    env.candidate_actions()
    generic = [p for p in sent if 'The viewer:' not in p]
    drama = [p for p in sent if 'The viewer: likes drama' in p]
    comedy = [p for p in sent if 'The viewer: likes comedy' in p]
    assert generic and drama and comedy and len(generic) + len(drama) + len(comedy) == len(sent)
    assert all('that this viewer would enjoy' in p for p in drama + comedy)
    assert {p.replace('likes drama', 'X') for p in drama} == {p.replace('likes comedy', 'X') for p in comedy}
    users = [{e['user'] for e in env.banks.bank(env.texts[0], env.bank_users(0, u))} for u in (0, 1)]
    assert users == [{None, 0}, {None, 1}]                                  # each viewer's own personalised cell


EDITS = [
    ('Move the story to a mining colony on the Moon.', 'In this version, the story takes place in a mining colony on the Moon.'),
    ('Make the hero a retired boxer.', 'In this version, the hero is a retired boxer who returns to the ring.'),
    ('Tell the story through flashbacks.', 'In this version, the story is told through a series of flashbacks.'),
    ('Give the villain a tragic motive.', 'In this version, the villain acts out of grief over a tragic loss.'),
    ('Set it in Victorian London.', 'In this version, the events unfold in the fog of Victorian London.'),
    ('Turn it into a musical.', 'In this version, the characters sing their feelings in musical numbers.'),
    ('Add a race against time over a stolen painting.', 'In this version, a stolen painting must be found before midnight.'),
    ('Make the tone lighter and more comedic.', 'In this version, the tone is light and full of comic moments.'),
]


def test_edit_following_tells_the_applied_edit_from_a_placebo():
    "Through the shipped MiniLM: a change that says its edit follows it; another step's change, or none, does not."
    from eagle_nb.encoder import load_backbone, NeighbourEncoder
    from eagle_nb.environment import edit_following, shuffled_changes, add_change
    enc = NeighbourEncoder(load_backbone('cpu'), cache=False)
    d = 'Sisters (2001). Directed by Ann Lee.\nStory: A quiet drama about two sisters who run a bakery in Lyon.'
    edits, changes = map(list, zip(*EDITS))
    before = [d] * len(EDITS)
    placebo = edits[2:] + edits[:2]                               # another edit, not applied
    own = edit_following(enc, before, [add_change(d, c) for c in changes], edits, placebo)
    other = edit_following(enc, before, [add_change(d, c) for c in changes[2:] + changes[:2]], edits, placebo)
    assert own.all() and not other.any()                          # the placebo's own change follows the placebo
    assert not edit_following(enc, before, before, edits, placebo).any()          # a step that changed nothing
    null = edit_following(enc, before, shuffled_changes(before, changes, seed=1), edits, placebo)
    assert null.mean() < own.mean()                                # shuffled change sentences: some follow by chance

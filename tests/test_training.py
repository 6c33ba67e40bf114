"""Agent training: the maths on hand-computed cases, guided masks, guide independence, NaN rewards,
bad configs, checkpoints that survive kill -9, and resume == uninterrupted (through the `eagle train` CLI)."""
import math, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch
from eagle_nb.core import kl_categorical, gae_advantages, guided_masks
from eagle_nb.data import load_catalog
from eagle_nb.environment import EagleEnv, EnvConfig
from eagle_nb.policy import PolicyOut, masked_log_softmax, reference_targets
from eagle_nb.training import (TrainConfig, Batch, MyopicOracle, AnchorPools, pretrain_reference, batch_losses, collect, frozen_copy, phase_algorithm, save_checkpoint,
                               load_checkpoint, Trainer, ReplayEnv, GapCurve, grow_replay_tree, plant_best_edit,
                               LookaheadPolicy, policy_probs, tree_values, optimal_probs, optimum_by_judge)
from eagle_nb.policy import EmbeddingPolicy
from eagle_nb.utils import stable_hash
from test_cli import run_cli, TINY


class Logits(torch.nn.Module):
    "A state-independent table of logits and a constant value: the smallest policy."
    def __init__(self, K=3, init=None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(K) if init is None else torch.tensor(init))
        self.v = torch.nn.Parameter(torch.zeros(1))
    def forward(self, obs, cands):
        K = max(map(len, cands))
        return PolicyOut(masked_log_softmax(self.w[:K].expand(len(obs), K), [len(c) for c in cands]), self.v.expand(len(obs)))


def test_kl_by_hand():
    p, q = torch.tensor([.5, .5, 0.]), torch.tensor([.25, .25, .5])
    assert math.isclose(kl_categorical(p.log(), q.log()).item(), math.log(2), rel_tol=1e-6)   # 0 log 0 = 0, no NaN


def test_gae_by_hand():
    r, v = torch.tensor([[0., 0., 1.]]), torch.tensor([[.5, .6, .7]])
    adv, ret = gae_advantages(r, v, gamma=1.0, lam=0.5)
    d = [0 + .6 - .5, 0 + .7 - .6, 1 - .7]                        # TD errors
    want = [d[0] + .5 * d[1] + .25 * d[2], d[1] + .5 * d[2], d[2]]
    assert torch.allclose(adv[0], torch.tensor(want)) and torch.allclose(ret, adv + v)


def test_update_gradient_is_reinforce_with_baseline():
    """H=2, reward only at the end; lam=1, gamma=1, no whitening/clipping: the loss gradient is -(R - V) grad log pi(a_t)."""
    pol = Logits(3, [0.2, -0.1, 0.3]); ref = frozen_copy(pol)
    b = Batch([{'text': 'x'}] * 2, [['a', 'b', 'c']] * 2, torch.tensor([[2, 0]]), None, torch.tensor([[0., 1.5]]),
              torch.tensor([[True, True]]), torch.tensor([[False, False]]), torch.tensor([[False, False]]), torch.zeros(1), torch.ones(1))
    with torch.no_grad(): b.old_logp = pol(b.obs, b.cands).logp.gather(1, b.actions.view(-1, 1)).view(1, 2)
    loss, d = batch_losses(pol, ref, b, [0], TrainConfig(clip=0, whiten=False, value_coef=0, lam=1.0, alpha=0.0))
    loss.backward()
    p = torch.softmax(torch.tensor([0.2, -0.1, 0.3]), 0)
    g = lambda a: torch.eye(3)[a] - p                           # grad of log softmax at action a
    want = -(1.5 * g(2) + 1.5 * g(0)) / 2                        # A_t = 1.5 - V(=0) for both steps, mean over 2 steps
    assert torch.allclose(pol.w.grad, want, atol=1e-6), (pol.w.grad, want)


@pytest.mark.parametrize('algo, H, h, guide, pg', [
    ('ppo', 3, [0, 2], [[0, 0, 0], [0, 0, 0]], [[1, 1, 1], [1, 1, 1]]),
    ('ppo++', 3, [0, 2], [[0, 0, 0], [1, 1, 0]], [[1, 1, 1], [0, 0, 1]]),
    ('aggrevated', 3, [0, 1], [[0, 0, 0], [0, 1, 1]], [[1, 1, 1], [1, 0, 0]]),
])
def test_guided_masks(algo, H, h, guide, pg):
    g, p, v = guided_masks(algo, H, torch.tensor(h))
    assert g.int().tolist() == guide and p.int().tolist() == pg and not (g & p).any()


def test_lols_and_d2lols_schedules():
    rng = np.random.default_rng(0)
    assert {phase_algorithm('lols', i, 5, rng) for i in range(50)} == {'ppo++', 'aggrevated'}
    assert [phase_algorithm('d2lols', i, 3, rng) for i in range(5)] == ['aggrevated'] * 3 + ['ppo++'] * 2
    assert phase_algorithm('ppo', 7, 3, rng) == 'ppo'


def test_guide_is_a_frozen_copy():
    pol = Logits(3, [1., 0., -1.]); guide = frozen_copy(pol)
    before = guide([{}], [['a', 'b', 'c']]).logp.clone()
    with torch.no_grad(): pol.w.add_(5.0)
    assert torch.equal(guide([{}], [['a', 'b', 'c']]).logp, before)
    assert not any(p.requires_grad for p in guide.parameters())


class LenEncoder:
    "Text -> a 2-d vector from its length (no model needed)."
    def encode(self, texts): return torch.tensor([[len(t) / 100., 1.] for t in texts])


def nan_utility(z, users):
    return {'total': torch.full((len(z),), float('nan')), 'rating': torch.zeros(len(z)), 'novelty': torch.zeros(len(z))}


def test_nan_reward_is_caught():
    cat = load_catalog('ml-100k', metadata=False)
    env = EagleEnv(None, LenEncoder(), nan_utility, cat, ['A quiet drama.'] * cat.n_items, lambda u: '',
                   EnvConfig(horizon=2, n_generic=2, n_personal=1, proposals='templates', transitions='append'))
    with pytest.raises(FloatingPointError, match='non-finite reward'):
        collect(env, Logits(3), None, [0, 1], [0, 1], 'ppo', 0.0, seed=0)


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    cfg = ['--set', 'run.seed=3'] + TINY
    assert run_cli('train', '--out', str(tmp_path / 'a'), '--iterations', '1', *cfg).returncode == 0
    from eagle_nb.training import Trainer, TrainConfig, AnchorPools
    ck = next((Path(os.environ.get('EAGLE_CACHE', Path.home() / '.cache' / 'eagle_nb')) / 'runs').glob('*/checkpoint.pt'))
    pol = Logits(3); T = Trainer(TrainConfig(iterations=9, dyna_iterations=0), None, AnchorPools([], [], [], []), pol, frozen_copy(pol), ck.parent,
                                  device='cpu', progress=False)
    with pytest.raises(ValueError, match='different configuration'):
        T.resume()


def test_bad_train_config_is_a_clear_error(tmp_path):
    r = run_cli('train', '--out', str(tmp_path), '--set', 'train.algorithm=dagger')
    assert r.returncode == 2 and 'algorithm must be one of' in r.stderr and 'Traceback' not in r.stderr
    r = run_cli('train', '--out', str(tmp_path), '--set', 'train.beta=2')
    assert r.returncode == 2 and 'beta must be in [0, 1]' in r.stderr


WRITER = """
import sys, torch
from eagle_nb.training import save_checkpoint
i = 0
while True:
    i += 1
    save_checkpoint(sys.argv[1], {'step': i, 'blob': torch.full((4_000_000,), float(i))})
    print(i, flush=True)
"""


def test_kill_9_mid_checkpoint_leaves_previous_checkpoint_loadable(tmp_path):
    f = tmp_path / 'checkpoint.pt'
    p = subprocess.Popen([sys.executable, '-c', WRITER, str(f)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3): p.stdout.readline()                   # a few complete checkpoints exist
        time.sleep(0.05); os.kill(p.pid, signal.SIGKILL); p.wait()
    finally:
        if p.poll() is None: p.kill()
    s = load_checkpoint(f)
    assert s['step'] >= 3 and torch.all(s['blob'] == float(s['step']))   # complete and self-consistent
    assert not [x for x in tmp_path.iterdir() if x.name != 'checkpoint.pt' and not x.name.startswith('.checkpoint.pt.')]


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    f = tmp_path / 'checkpoint.pt'; f.write_bytes(b'not a checkpoint')
    with pytest.raises(RuntimeError, match='unreadable'):
        load_checkpoint(f)


def test_resumed_training_equals_uninterrupted(tmp_path):
    """`eagle train --iterations 2` then `eagle train` (resume) gives the same metrics as one uninterrupted run, for every seed."""
    cfg = ['--set', 'run.seed=7'] + TINY
    r = run_cli('train', '--out', str(tmp_path / 'a'), '--fresh', *cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    full = pd.read_csv(tmp_path / 'a' / 'train_metrics.csv')
    r1 = run_cli('train', '--out', str(tmp_path / 'b'), '--fresh', '--iterations', '2', *cfg)
    assert r1.returncode == 0 and 'trained 2 seeds to [2, 2] of 3 iterations' in r1.stdout, (r1.stdout, r1.stderr[-3000:])
    r2 = run_cli('train', '--out', str(tmp_path / 'b'), *cfg)
    assert r2.returncode == 0 and r2.stderr.count('resumed from') == 2 and 'at iteration 2' in r2.stderr, r2.stderr[-3000:]
    resumed = pd.read_csv(tmp_path / 'b' / 'train_metrics.csv')
    cols = ['seed', 'iteration', 'environment', 'train_U_end', 'kl', 'loss_pg', 'loss_v', 'entropy']
    assert len(full) == 6
    pd.testing.assert_frame_equal(full[cols], resumed[cols])


def test_a_fresh_policy_depends_on_its_seed_only():
    "Initial weights come from `make_policy`'s seed, not from whatever ran before (e.g. stages read from a cache)."
    from eagle_nb.training import make_policy

    class Enc:  # a test fixture standing in for E_D: constant 8-d sentence embeddings, a 3-d latent space
        out_dim = 3
        def sentence_embed(self, texts): return torch.ones(len(texts), 8)

    cfg = TrainConfig()
    weights = lambda p: [t.clone() for t in p.state_dict().values()]
    torch.manual_seed(1)
    a = weights(make_policy(cfg, Enc(), 'cpu', seed=5))
    torch.manual_seed(2); torch.rand(100)                      # a different history of the global generator
    state = torch.get_rng_state()
    b = weights(make_policy(cfg, Enc(), 'cpu', seed=5))
    assert torch.equal(torch.get_rng_state(), state)           # the caller's random state is untouched
    c = weights(make_policy(cfg, Enc(), 'cpu', seed=6))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_reference_targets_by_hand():
    """The paper's three targets: uniform over the candidates, optimistic on the best next-step utility (ties split),
    G-optimal uniform on a rounded design that spans the candidates' directions; no direction at all gives uniform."""
    Z = torch.tensor([[1., 0.], [0., 1.], [1e-3, 1e-3], [0.5, 0.5]])                 # two directions and two weak ones
    d = [{'cands': ['a', 'b', 'c', 'd'], 'U1': torch.tensor([1., 3., 3., 2.]), 'Z': Z},
         {'cands': ['a', 'b'], 'U1': torch.tensor([0., 1.]), 'Z': torch.zeros(2, 2)}]
    t = reference_targets(d, k=2)
    assert torch.allclose(t['uniform'][0], torch.full((4,), .25)) and torch.allclose(t['uniform'][1], torch.full((2,), .5))
    assert t['optimistic'][0].tolist() == [0., .5, .5, 0.] and t['optimistic'][1].tolist() == [0., 1.]
    g = t['G-optimal'][0]
    S = torch.nonzero(g).flatten()
    assert len(S) == 2 and torch.allclose(g[S], torch.full((2,), .5)) and math.isclose(float(g.sum()), 1.0)
    assert torch.linalg.matrix_rank(Z[S]) == 2                                         # the chosen pair spans the plane
    assert t['G-optimal'][1].tolist() == [.5, .5]                                      # no candidate moved the state


def test_myopic_oracle_picks_the_candidate_with_the_best_next_step():
    """The guide's argmax is the candidate whose one-step transition scores best, checked by stepping every candidate."""
    cat = load_catalog('ml-100k', metadata=False)
    length_utility = lambda z, users: {'total': z[:, 0], 'rating': z[:, 0], 'novelty': torch.zeros(len(z))}
    env = EagleEnv(None, LenEncoder(), length_utility, cat, ['A quiet drama.'] * cat.n_items, lambda u: '',
                   EnvConfig(horizon=1, n_generic=3, n_personal=1, proposals='templates', transitions='append'))
    opts = {'anchors': [0, 1, 2], 'users': [0, 1, 2]}
    obs, _ = env.reset(seed=0, options=opts)
    cands = env.candidate_actions()
    chosen = MyopicOracle(env)(obs, cands).logp.argmax(1)
    K = len(cands[0])
    U = torch.zeros(3, K)
    for j in range(K):                                                                  # the real next-step utility of each
        env.reset(seed=0, options=opts)
        assert env.candidate_actions() == cands
        U[:, j] = env.step([j] * 3)[1]
    assert (U.max(1).values > U.min(1).values).all()                                    # every state has a best candidate
    for i in range(3):
        assert U[i, chosen[i]] >= U[i].max() - 1e-6, (i, U[i], chosen[i])


def test_a_lookahead_policy_reads_the_outcome_each_edit_will_have(tmp_path, monkeypatch):
    """Its feature is the utility change that stepping the candidate really gives (checked by stepping every one); an
    unbound policy is refused; with a large weight it acts greedily on that change, in the real and the replayed env."""
    monkeypatch.setenv('EAGLE_CACHE', str(tmp_path))
    cat = load_catalog('ml-100k', metadata=False)
    length_utility = lambda z, users: {'total': z[:, 0], 'rating': z[:, 0], 'novelty': torch.zeros(len(z))}
    env = EagleEnv(None, LenEncoder(), length_utility, cat, ['A quiet drama.'] * cat.n_items, lambda u: '',
                   EnvConfig(horizon=2, n_generic=3, n_personal=1, proposals='templates', transitions='append'))
    torch.manual_seed(0)
    pol = LookaheadPolicy(EmbeddingPolicy(HashEmbed(), 32, hidden=8), scale=0.01)
    opts = {'anchors': [0, 1, 2], 'users': [0, 1, 2]}
    obs, _ = env.reset(seed=0, options=opts)
    cands = env.candidate_actions()
    with pytest.raises(RuntimeError, match='bound to its environment'):
        pol(obs, cands)
    F = pol.bind(env).features(obs, cands)[..., 0] * 0.01
    K = len(cands[0])
    dU = torch.zeros(3, K)
    for j in range(K):                                                                  # step every candidate for real
        _, info0 = env.reset(seed=0, options=opts)
        env.step([j] * 3)
        dU[:, j] = torch.tensor([s.utility['total'] - i0['total'] for s, i0 in zip(env.states, info0)])
    assert (dU.max(1).values > dU.min(1).values).all()                                  # the candidates differ
    assert torch.allclose(F, dU, atol=1e-5), (F, dU)
    sub = LookaheadPolicy(EmbeddingPolicy(HashEmbed(), 32, hidden=8), scale=0.01).bind(env)
    obs, _ = env.reset(seed=0, options=opts)
    before = env.stats['transitions']
    Fs = sub.features(obs[1:], env.candidate_actions()[1:])[..., 0] * 0.01            # some episodes only (a policy mix)
    assert torch.allclose(Fs, dU[1:], atol=1e-5) and env.stats['transitions'] - before == 2 * K
    pol.w.weight.data.fill_(100.0)                                                      # greedy on the outcome
    assert torch.equal(pol(obs, env.candidate_actions()).logp.argmax(1), dU.argmax(1))
    tree = grow_replay_tree(env, [0, 1], [0, 1], log=lambda m: None)
    renv = ReplayEnv(tree, env)
    P = policy_probs(renv, pol)                                                         # binds to the tree
    inner = (tree.depth < tree.H).nonzero().squeeze(1)
    child_U = tree.parts['total'][tree.children[inner]]
    assert torch.equal(P[inner].argmax(1), child_U.argmax(1))
    frozen = frozen_copy(LookaheadPolicy(EmbeddingPolicy(HashEmbed(), 32, hidden=8)))  # pi_ref: weight 0, reads nothing
    obs, _ = env.reset(seed=0, options=opts)
    assert frozen(obs, env.candidate_actions()).logp.shape == (3, K)


def test_a_guided_algorithm_changes_learning_against_ppo():
    """PPO++ with the myopic oracle as guide (beta = 1): the guide takes the roll-in steps, those steps carry no policy
    gradient, the episodes differ from PPO's with the same seed, and so does the update."""
    cat = load_catalog('ml-100k', metadata=False)
    length_utility = lambda z, users: {'total': z[:, 0], 'rating': z[:, 0], 'novelty': torch.zeros(len(z))}
    env = EagleEnv(None, LenEncoder(), length_utility, cat, ['A quiet drama.'] * cat.n_items, lambda u: '',
                   EnvConfig(horizon=3, n_generic=3, n_personal=1, proposals='templates', transitions='append'))
    anchors, users = list(range(8)), list(range(8))
    grads, batches = {}, {}
    for algo in ('ppo', 'ppo++'):
        torch.manual_seed(0)
        pol = Logits(4); ref = frozen_copy(pol)
        b, ep = collect(env, pol, MyopicOracle(env) if algo != 'ppo' else None, anchors, users, algo, 1.0, seed=0)
        loss, _ = batch_losses(pol, ref, b, list(range(len(anchors))), TrainConfig(algorithm=algo))
        loss.backward()
        grads[algo], batches[algo] = pol.w.grad.clone(), b
    g, p = batches['ppo++'], batches['ppo']
    assert g.guide_acts.any() and not p.guide_acts.any()
    assert not (g.guide_acts & g.pg_mask).any() and p.pg_mask.all()          # the guide's steps are not the learner's
    assert not torch.equal(g.actions, p.actions)
    assert float(g.end_U.mean()) > float(p.end_U.mean())                       # the oracle's roll-in steps help here
    assert not torch.allclose(grads['ppo++'], grads['ppo'])


class LenSentenceEncoder(LenEncoder):
    "The length encoder with the sentence-embedding interface the embedding policy reads (a test fixture)."
    out_dim = 2
    def sentence_embed(self, texts, grad=False): return torch.tensor([[len(t) / 100., t.count(' ') / 10.] for t in texts])


def test_the_reference_cache_follows_the_reward(tmp_path, monkeypatch):
    """pi_ref pre-trained under one utility is reused under the same one and never under another."""
    monkeypatch.setenv('EAGLE_CACHE', str(tmp_path))
    cat = load_catalog('ml-100k', metadata=False)
    def env_with(scale):
        util = lambda z, users: {'total': scale * z[:, 0], 'rating': z[:, 0], 'novelty': torch.zeros(len(z))}
        return EagleEnv(None, LenSentenceEncoder(), util, cat, ['A quiet drama.'] * cat.n_items, lambda u: '',
                        EnvConfig(horizon=1, n_generic=3, n_personal=1, proposals='templates', transitions='append'))
    cfg = TrainConfig(ref_epochs=2, hidden=8)
    pools = AnchorPools([0, 1, 2, 3], [0, 1, 2, 3], [4], [4])
    said = []
    for scale in (1.0, 1.0, -1.0):
        env = env_with(scale)
        pretrain_reference(cfg, env, pools, env.encoder, seed=0, device='cpu', log=said.append)
    assert 'cached' not in said[0] and 'cached' in said[1] and 'cached' not in said[2], said


def test_the_lm_policy_trains_as_an_agent(tmp_path):
    """TrainConfig(policy='lm') with the tiny model (the smoke test of the paper's policy on the default path): two PPO
    updates in the fixture environment move its choices away from pi_ref's, and only the trained top block, the final
    norm and the value head change."""
    from eagle_nb.training import Trainer, make_policy, learner_from
    cat = load_catalog('ml-100k', metadata=False)
    length_utility = lambda z, users: {'total': z[:, 0], 'rating': z[:, 0], 'novelty': torch.zeros(len(z))}
    env = EagleEnv(None, LenEncoder(), length_utility, cat, [f'A quiet drama, number {i}.' for i in range(cat.n_items)],
                   lambda u: '', EnvConfig(horizon=2, n_generic=3, n_personal=1, proposals='templates', transitions='append'))
    cfg = TrainConfig(policy='lm', lm_model='tiny', lm_train_layers=1, iterations=2, dyna_iterations=0, episodes=4,
                      minibatch=4, lr=1e-2, checkpoint_every=1)
    ref = frozen_copy(make_policy(cfg, env.encoder, 'cpu'))
    T = Trainer(cfg, env, AnchorPools([0, 1, 2, 3], [0, 1, 2, 3], [4, 5], [4, 5]), learner_from(ref, cfg, env.encoder, 'cpu'),
                ref, tmp_path / 'run', seed=0, device='cpu', progress=False, log=lambda m: None)
    T.train()
    assert T.iteration == 2
    obs, _ = env.reset(seed=1, options={'anchors': [4, 5, 6], 'users': [4, 5, 6]})
    cands = env.candidate_actions()
    with torch.no_grad():
        tv = float(0.5 * (T.learner(obs, cands).probs() - ref(obs, cands).probs()).abs().sum(1).mean())
    assert tv > 1e-4, tv                                                  # a run that learned nothing gives exactly 0
    before = dict(ref.named_parameters())
    changed = {n for n, p in T.learner.named_parameters() if not torch.equal(p.detach().cpu(), before[n].detach().cpu())}
    top = f"lm.model.layers.{len(T.learner.lm.model.layers) - 1}."
    assert any(n.startswith(top) for n in changed), changed
    assert all(n.startswith((top, 'lm.model.norm', 'value_head')) for n in changed), changed


class HashEmbed:
    "Sentence embeddings from hashed words (a test fixture): equal texts embed equally, different edits differ."
    def __call__(self, texts):
        out = torch.zeros(len(texts), 32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(stable_hash(w)[:6], 16) % 32] += 1.0
        return out


def _planted_run(tmp_path, lr, lookahead=False):
    """Trees grown by the tiny model through the real environment (H = 2, K = 4), a planted best edit in each, and a
    light policy trained from scratch on the training trees; returns the exact gap closed on both tree sets."""
    from test_llm_env import make_env as tiny_env, TinyEncoder
    from eagle_nb.reward import content_gap_utility
    cat = load_catalog('ml-100k', metadata=False)
    class Lat: pass
    lat = Lat(); g = torch.Generator().manual_seed(0)
    lat.item_emb = torch.rand(50, 4, generator=g); lat.user_emb = torch.rand(5, 4, generator=g)
    env = tiny_env(tmp_path, (cat, content_gap_utility(lat, lam=0.5, device='cpu')))
    train, held = ([0, 1, 2], [0, 1, 0]), ([0, 1, 2], [1, 0, 1])
    envs = {'train': ReplayEnv(plant_best_edit(grow_replay_tree(env, *train, log=lambda m: None), seed=1), env),
            'heldout': ReplayEnv(plant_best_edit(grow_replay_tree(env, *held, log=lambda m: None), seed=2), env)}
    assert envs['train'].tree.transitions == 3 * (4 + 16)
    torch.manual_seed(0)
    pol = EmbeddingPolicy(HashEmbed(), 32, hidden=32)
    pol = LookaheadPolicy(pol, scale=0.1) if lookahead else pol
    cfg = TrainConfig(iterations=60, dyna_iterations=0, episodes=3, minibatch=3, lr=lr, checkpoint_every=60)
    T = Trainer(cfg, envs['train'], AnchorPools(*train, *held), pol, frozen_copy(pol), tmp_path / f'run{lr}{lookahead}', seed=0,
                device='cpu', progress=False, callbacks=[GapCurve(envs, every=60)])
    m = T.train()
    if lookahead:
        assert float(T.learner.w.weight) > 0                                          # it learned to read the outcome
    return float(m.gap_train.iloc[-1]), float(m.gap_heldout.iloc[-1])


def test_the_learner_finds_a_planted_best_edit(tmp_path, monkeypatch):
    """The known-answer check on trees of real transitions: the learner closes most of the random-to-optimal gap, on
    the trees it trained on and on held-out ones; a learner that does not learn (learning rate 1e-12) does not."""
    monkeypatch.setenv('EAGLE_CACHE', str(tmp_path))
    train, held = _planted_run(tmp_path, 3e-3)
    assert train > 0.7 and held > 0.5, (train, held)
    train0, held0 = _planted_run(tmp_path, 1e-12)
    assert abs(train0) < 0.3 and abs(held0) < 0.3, (train0, held0)
    train_la, held_la = _planted_run(tmp_path, 3e-3, lookahead=True)                   # `eagle run`'s policy class
    assert train_la > 0.7 and held_la > 0.5, (train_la, held_la)


def test_replay_trees_refuse_a_size_beyond_the_budget_and_regrow_incomplete_caches(tmp_path, monkeypatch):
    monkeypatch.setenv('EAGLE_CACHE', str(tmp_path))
    cat = load_catalog('ml-100k', metadata=False)
    util = lambda z, users: {'total': z[:, 0], 'rating': z[:, 0], 'novelty': torch.zeros(len(z))}
    env = EagleEnv(None, LenEncoder(), util, cat, ['A quiet drama.'] * cat.n_items, lambda u: '',
                   EnvConfig(horizon=3, n_generic=3, n_personal=1, proposals='templates', transitions='append'))
    with pytest.raises(ValueError, match=r'4 roots x \(K \+ \.\.\. \+ K\^H with K=4, H=3\) = 336 transitions > the budget of 300'):
        grow_replay_tree(env, [0, 1, 2, 3], [0, 1, 2, 3], budget=300)
    assert env.stats['transitions'] == 0                                  # refused before any generation
    said = []
    tree = grow_replay_tree(env, [0, 1], [0, 1], log=said.append)
    assert tree.transitions == 2 * 84 and 'grown' in said[-1]
    f = next((tmp_path / 'trees').glob('*.pt'))
    rec = load_checkpoint(f)
    save_checkpoint(f, dict(rec, children=[c[:1] for c in rec['children']]))   # an incomplete tree on disk
    again = grow_replay_tree(env, [0, 1], [0, 1], log=said.append)
    assert '1 of 2 roots grown' in said[-1] and 'regrown' in said[-1]
    assert again.text == tree.text and torch.equal(again.children, tree.children)
    other = EagleEnv(None, LenEncoder(), lambda z, u: {k: 2 * v for k, v in util(z, u).items()}, cat, env.texts, lambda u: '', env.cfg)
    grow_replay_tree(other, [0, 1], [0, 1], log=said.append)              # another reward: its own trees
    assert '2 of 2 roots grown' in said[-1]


class NegLenEncoder:
    "A judge that reads length the other way round: it pays for what the proxy (LenEncoder) punishes."
    def encode(self, texts): return torch.tensor([[-len(t) / 100., 1.] for t in texts])


def test_the_judge_reading_of_the_exact_optimum(tmp_path, monkeypatch):
    """The reward's exact optimum as a policy reaches V* everywhere; read by its own encoder it gains what the proxy
    gains, read by a judge that disagrees it is worse than random edits, while the judge's own optimum is not."""
    monkeypatch.setenv('EAGLE_CACHE', str(tmp_path))
    cat = load_catalog('ml-100k', metadata=False)
    util = lambda z, users: {'total': z[:, 0], 'rating': z[:, 0], 'novelty': torch.zeros(len(z))}
    texts = [f'A quiet drama number {i}.' for i in range(cat.n_items)]
    env = EagleEnv(None, LenEncoder(), util, cat, texts, lambda u: '',
                   EnvConfig(horizon=2, n_generic=3, n_personal=1, proposals='templates', transitions='append'))
    tree = grow_replay_tree(env, [0, 1, 2], [0, 1, 2], log=lambda m: None)
    P = optimal_probs(tree)
    V = tree_values(tree, probs=P)
    assert torch.allclose(V['policy'], V['optimal'])
    assert bool((V['optimal'][tree.root_node] > V['random'][tree.root_node] + 1e-6).all())      # candidates differ in length
    trees = {'train': ReplayEnv(tree, env)}
    same = optimum_by_judge(env, trees, LenEncoder())
    assert np.allclose(same['judge gain of the optimum'], same['proxy gain of the optimum'])
    assert (same['proxy gain of the optimum'] > 0).all()
    other = optimum_by_judge(env, trees, NegLenEncoder())
    assert (other['judge gain of the optimum'] < 0).all()
    assert (other["judge gain of the judge's optimum"] > 0).all()

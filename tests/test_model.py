"""CapsNet and baseline: shapes, parameter counts, squash, routing against a plain loop, masking."""

import math

import pytest
import torch

from capslib.core.model import (NUM_PRIMARY, BaselineCNN, CapsNet, Decoder, build_model, count_parameters,
                           dynamic_routing, squash)


@pytest.fixture(scope="module")
def capsnet():
    torch.manual_seed(0)
    return CapsNet(routing_iterations=3, reconstruction=True)


def test_parameter_counts_match_the_paper():
    assert count_parameters(CapsNet(routing_iterations=3, reconstruction=True)) == 8_215_568
    assert count_parameters(CapsNet(routing_iterations=3, reconstruction=False)) == 6_804_224
    assert count_parameters(BaselineCNN()) == 35_445_522
    assert CapsNet(routing_iterations=3, reconstruction=True).W.shape == (1152, 10, 16, 8)  # one 8×16 matrix per (primary, digit) pair


def test_forward_shapes_and_outputs(capsnet):
    images, targets = torch.rand(3, 1, 28, 28), torch.tensor([1, 7, 3])
    train = capsnet(images, targets)
    assert train.scores.shape == (3, 10) and train.capsules.shape == (3, 10, 16)
    assert train.reconstruction.shape == (3, 784) and train.loss.shape == ()
    assert torch.allclose(train.scores, train.capsules.norm(dim=-1))
    assert (train.scores < 1).all() and (train.scores >= 0).all()  # squashed lengths
    assert torch.allclose(train.loss, train.margin_loss + 0.0005 * train.reconstruction_loss)
    test = capsnet(images)
    assert test.loss is None and test.reconstruction.shape == (3, 784)


def test_capsnet_without_decoder_has_no_reconstruction():
    output = CapsNet(routing_iterations=3, reconstruction=False)(torch.rand(2, 1, 28, 28), torch.tensor([0, 1]))
    assert output.reconstruction is None and output.reconstruction_loss is None
    assert torch.equal(output.loss, output.margin_loss)


def test_baseline_is_a_cross_entropy_classifier():
    torch.manual_seed(0)
    model = BaselineCNN().eval()
    images, targets = torch.rand(2, 1, 28, 28), torch.tensor([4, 2])
    output = model(images, targets)
    assert output.scores.shape == (2, 10)
    assert torch.allclose(output.loss, torch.nn.functional.cross_entropy(output.scores, targets))
    assert build_model("baseline").__class__ is BaselineCNN
    with pytest.raises(ValueError):
        build_model("resnet")


@pytest.mark.parametrize("vector", [[3.0, 4.0], [0.1, 0.0, 0.0], [100.0, 0.0]])
def test_squash_on_hand_made_vectors(vector):
    s = torch.tensor(vector)
    norm = math.sqrt(sum(x * x for x in vector))
    expected = torch.tensor([norm ** 2 / (1 + norm ** 2) * x / norm for x in vector])
    assert torch.allclose(squash(s), expected, atol=1e-6)


def test_squash_of_zero_is_zero_with_a_finite_gradient():
    s = torch.zeros(4, requires_grad=True)
    v = squash(s)
    v.sum().backward()
    assert torch.equal(v, torch.zeros(4)) and torch.isfinite(s.grad).all()


def reference_routing(u_hat, iterations, couplings=None):
    """Procedure 1 of the paper with plain Python loops over capsules, in float64. Appends each
    iteration's coupling coefficients of each image to `couplings` ([image][iteration][i][j])."""
    batch, n_in, n_out, dim = u_hat.shape
    u = u_hat.double().tolist()
    result = []
    for b in range(batch):
        logits = [[0.0] * n_out for _ in range(n_in)]
        if couplings is not None:
            couplings.append([])
        for it in range(iterations):
            coupling = []
            for i in range(n_in):
                exps = [math.exp(x) for x in logits[i]]
                coupling.append([e / sum(exps) for e in exps])
            if couplings is not None:
                couplings[-1].append(coupling)
            v = []
            for j in range(n_out):
                s = [sum(coupling[i][j] * u[b][i][j][d] for i in range(n_in)) for d in range(dim)]
                sq = sum(x * x for x in s)
                v.append([sq / (1 + sq) * x / math.sqrt(sq) for x in s])
            for i in range(n_in):
                for j in range(n_out):
                    logits[i][j] += sum(u[b][i][j][d] * v[j][d] for d in range(dim))
        result.append(v)
    return torch.tensor(result, dtype=torch.float64)


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_routing_matches_a_plain_loop_reference(iterations):
    torch.manual_seed(iterations)
    u_hat = torch.randn(2, 12, 4, 5) * 0.3
    fast = dynamic_routing(u_hat, iterations).double()
    assert torch.allclose(fast, reference_routing(u_hat, iterations), atol=1e-5)


@pytest.mark.parametrize("iterations", [1, 3])
def test_routing_returns_the_couplings_of_every_iteration(iterations):
    torch.manual_seed(10 + iterations)
    u_hat = torch.randn(2, 12, 4, 5) * 0.5
    v, couplings = dynamic_routing(u_hat, iterations, return_couplings=True)
    assert torch.equal(v, dynamic_routing(u_hat, iterations))  # the same capsules as without
    assert couplings.shape == (iterations, 2, 12, 4)
    expected = []
    reference_routing(u_hat, iterations, expected)
    expected = torch.tensor(expected, dtype=torch.float64).transpose(0, 1)  # iteration × image × i × j
    assert torch.allclose(couplings.double(), expected, atol=1e-6)
    assert torch.allclose(couplings[0], torch.full_like(couplings[0], 1 / 4))  # routing starts uniform
    assert torch.allclose(couplings.sum(dim=-1), torch.ones(iterations, 2, 12))


def test_routing_couplings_move_towards_agreement():
    # every input predicts the same vector for parent 0 and noise for the others: routing must
    # shift each input's coupling towards parent 0, iteration after iteration
    torch.manual_seed(3)
    u_hat = 0.05 * torch.randn(1, 20, 4, 6)
    u_hat[:, :, 0] = torch.tensor([1.0, 0.5, 0, 0, 0, 0])
    _, couplings = dynamic_routing(u_hat, 3, return_couplings=True)
    to_parent_0 = couplings[:, 0, :, 0].mean(dim=1)
    assert to_parent_0[0] == pytest.approx(0.25) and to_parent_0[1] > 0.3 and to_parent_0[2] > to_parent_0[1]


def test_capsnet_couplings_are_those_its_digit_capsules_use(capsnet):
    images = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        couplings = capsnet.couplings(images)
        u_hat = capsnet.prediction_vectors(images)
        capsules = capsnet.digit_capsules(images)
    assert couplings.shape == (3, 2, NUM_PRIMARY, 10)
    # the last iteration's capsules are the squashed sums of the predictions weighted by its couplings
    assert torch.allclose(squash((couplings[-1].unsqueeze(-1) * u_hat).sum(dim=1)), capsules, atol=1e-6)


def test_routing_coupling_is_a_softmax_over_parents():
    # One iteration: c_ij = 1/10 for every i, so s_j is the mean of the predictions over parents.
    u_hat = torch.randn(1, 6, 10, 3)
    expected = squash(u_hat.sum(dim=1) / 10)
    assert torch.allclose(dynamic_routing(u_hat, 1), expected, atol=1e-6)


def test_digit_capsules_against_per_pair_matrix_products(capsnet):
    images = torch.rand(1, 1, 28, 28)
    u = capsnet.primary_capsules(images)[0]                           # 1152×8
    u_hat = torch.stack([torch.stack([capsnet.W[i, j] @ u[i] for j in range(10)]) for i in range(NUM_PRIMARY)])
    expected = dynamic_routing(u_hat.unsqueeze(0), 3)
    assert torch.allclose(capsnet.digit_capsules(images), expected, atol=1e-5)


def test_primary_capsule_groups_eight_channels_at_one_position(capsnet):
    images = torch.rand(2, 1, 28, 28)
    features = capsnet.primary_caps(torch.relu(capsnet.conv1(images)))  # B×256×6×6
    u = capsnet.primary_capsules(images)
    for row, col, kind in [(0, 0, 0), (2, 5, 7), (5, 5, 31)]:
        index = (row * 6 + col) * 32 + kind
        assert torch.allclose(u[:, index], squash(features[:, 8 * kind:8 * kind + 8, row, col]), atol=1e-6)


def test_decoder_sees_only_the_masked_class():
    torch.manual_seed(0)
    decoder = Decoder()
    capsules = torch.randn(2, 10, 16)
    classes = torch.tensor([3, 8])
    out = decoder(capsules, classes)
    other = capsules.clone()
    other[0, 5] += 1.0          # another class of image 0: no effect
    assert torch.equal(decoder(other, classes)[0], out[0])
    chosen = capsules.clone()
    chosen[0, 3] += 1.0         # the masked-in class of image 0: changes its reconstruction
    assert not torch.allclose(decoder(chosen, classes)[0], out[0])
    assert ((out >= 0) & (out <= 1)).all()


def test_training_masks_the_true_class_and_inference_the_predicted(early_capsnet, mnist_test):
    model, images = early_capsnet, mnist_test[0][:30]
    with torch.no_grad():
        inference = model(images)
        predicted = inference.scores.argmax(dim=1)
        assert len(predicted.unique()) >= 3, predicted  # decoding any one fixed class would show
        assert torch.allclose(inference.reconstruction, model.decode(inference.capsules, predicted), atol=1e-6)
        other = (predicted + 1) % 10
        assert (inference.reconstruction - model.decode(inference.capsules, other)).abs().max() > 1e-4
        trained = model(images, other)  # targets given: their class is decoded, whatever is predicted
        assert torch.allclose(trained.reconstruction, model.decode(trained.capsules, other), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_detached_routing_changes_gradients_not_outputs(seed):
    u_hat = torch.randn(2, 12, 4, 5, generator=torch.Generator().manual_seed(seed))
    grads, outputs = {}, {}
    for detach in (False, True):
        leaf = u_hat.clone().requires_grad_()
        v = dynamic_routing(leaf, 3, detach_early=detach)
        (grads[detach],) = torch.autograd.grad(v.square().sum(), leaf)
        outputs[detach] = v.detach()
    assert torch.equal(outputs[False], outputs[True])
    # the couplings' share of the gradient is gone: a large change (about 0.8 of its norm here)
    assert (grads[False] - grads[True]).norm() > 0.1 * grads[False].norm()


def test_capsnet_passes_detach_routing_on(mnist_test):
    images, targets = mnist_test[0][:2], mnist_test[1][:2]
    grads = {}
    for detach in (False, True):
        torch.manual_seed(0)
        model = CapsNet(routing_iterations=3, reconstruction=True, detach_routing=detach)
        model(images, targets).loss.backward()
        grads[detach] = model.W.grad
    # An untrained CapsNet routes almost uniformly, so the change is small, but computed twice
    # the same way the gradients would be bitwise equal.
    assert not torch.equal(grads[False], grads[True])


def test_routing_iterations_must_be_positive():
    with pytest.raises(ValueError):
        CapsNet(routing_iterations=0, reconstruction=True)

import sys, time, torch, json
from backdoorlab.data import load_dataset
from backdoorlab.models import create_model, save_checkpoint, load_checkpoint
from backdoorlab.models.sidecar import build_sidecar
from backdoorlab.attacks import make_poisoning_attack
from backdoorlab.budget import training_part, clean_budget
from backdoorlab.train import TrainConfig, train_model
from backdoorlab.metrics import evaluate
import os
d = load_dataset('mnist')
atk = make_poisoning_attack('badnets', target=0, poison_rate=0.1)
x, y = training_part(d)
pdata = atk.poison(x, y, 10, seed=0)
def factory():
    return create_model('small-cnn', num_classes=10, in_channels=1, input_size=(28,28), mean=d.mean, std=d.std)
for seed in [1, 2]:
    path = f'bench-out/exploration/mnist_ep{seed}'
    if os.path.exists(path + '/model.json'): continue
    torch.manual_seed(seed); m = factory()
    t = time.time()
    h = train_model(m, pdata.x, pdata.y, TrainConfig(epochs=3, lr=0.05, seed=seed), progress=False)
    r = evaluate(m, d.test_x, d.test_y, atk.backdoor, 10)
    print(seed, time.time() - t, r, flush=True)
    save_checkpoint(m, path, build_sidecar("small-cnn", dict(num_classes=10, in_channels=1, input_size=[28,28], mean=list(d.mean), std=list(d.std)), "mnist"))

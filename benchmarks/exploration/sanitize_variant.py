import sys, time, torch, json
from backdoorlab.data import load_dataset
from backdoorlab.models import create_model, load_checkpoint
from backdoorlab.attacks import make_poisoning_attack
from backdoorlab.budget import clean_budget
from backdoorlab.defenses import ModeConnectivitySanitizer, SanitizerConfig
d = load_dataset('mnist')
atk = make_poisoning_attack('badnets', target=0, poison_rate=0.1)
a, _ = load_checkpoint('bench-out/exploration/mnist_ep1'); b, _ = load_checkpoint('bench-out/exploration/mnist_ep2')
def factory():
    return create_model('small-cnn', num_classes=10, in_channels=1, input_size=(28,28), mean=d.mean, std=d.std)
size = int(sys.argv[1]); kw = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
one = kw.pop('one', False)
cfg = SanitizerConfig(**kw)
t0 = time.time()
res = ModeConnectivitySanitizer(cfg, factory, progress=False).sanitize(a, clean_budget(d, size), None if one else b,
        test=(d.test_x, d.test_y), backdoor=atk.backdoor, num_classes=10)
print(size, kw, 'one' if one else 'two', 'time', round(time.time()-t0), res.seconds, 'chosen t', res.ensemble_ts or res.t)
for r in res.path:
    print(f"t={r['t']:.2f} val={r['val_accuracy']:.3f} CA={r['clean_accuracy']:.4f} ASR={r['attack_success_rate']:.4f}")

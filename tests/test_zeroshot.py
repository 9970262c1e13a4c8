"""Zero-shot CLIP against a brute-force computation from open_clip's encode_image / encode_text."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ncprompt.data.cache import FeatureCache
from ncprompt.methods import build_method
from ncprompt.protocols.experiment import predict


def test_zero_shot_equals_brute_force(tiny_backbone, fmnist_small, tmp_path):
    test = fmnist_small.test
    feats = FeatureCache(tmp_path).features(tiny_backbone, test)
    method = build_method("zeroshot", tiny_backbone, fmnist_small.classnames, {"templates": "a photo of a {}."})
    preds, _ = predict(method, feats)
    # brute force: every image and every prompt through open_clip's own model, one by one
    model = tiny_backbone.model
    with torch.no_grad():
        text = torch.stack([
            model.encode_text(tiny_backbone.tokenize([f"a photo of a {c}."]))[0] for c in fmnist_small.classnames
        ])
        expected = []
        for i in range(len(test)):
            img = tiny_backbone.eval_transform(test.load(i)).unsqueeze(0)
            f = F.normalize(model.encode_image(img), dim=-1)
            logits = model.logit_scale.exp() * f @ F.normalize(text, dim=-1).T
            expected.append(int(logits.argmax()))
    assert np.array_equal(preds, np.array(expected))


def test_template_ensemble_is_mean_of_normalised_features(tiny_backbone):
    names = ["dress", "coat"]
    templates = ["a photo of a {}.", "a drawing of a {}.", "itap of a {}."]
    m = build_method("zeroshot", tiny_backbone, names, {"templates": templates})
    with torch.no_grad():
        ref = []
        for c in names:
            f = F.normalize(tiny_backbone.encode_texts([t.format(c) for t in templates]), dim=-1).mean(0)
            ref.append(F.normalize(f, dim=0))
    assert torch.allclose(m.text_features(), torch.stack(ref), atol=1e-6)


def test_clip_ensemble_has_80_templates(tiny_backbone):
    m = build_method("zeroshot", tiny_backbone, ["bag"], {"templates": "ensemble"})
    assert len(m.templates) == 80 and all("{}" in t for t in m.templates)

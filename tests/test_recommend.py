import numpy as np
import pandas as pd
import torch

from kickvision.evaluate.retrieval import contact_sheet, retrieval_scores
from kickvision.model.index import EmbeddingIndex, make_index
from kickvision.train.losses import supervised_contrastive_loss


def _index(n=50, d=8, seed=0):
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame(
        {
            "product_id": [f"p{i}" for i in range(n)],
            "title": [f"title {i}" for i in range(n)],
            "category": [f"c{i % 3}" for i in range(n)],
            "image": [f"images/{i}.png" for i in range(n)],
            "base_colour": [["Black", "White"][i % 2] for i in range(n)],
        }
    )
    return make_index(rng.normal(size=(n, d)), rows), rows


def test_index_round_trip_through_save_and_load(tmp_path):
    index, _ = _index()
    index.save(tmp_path / "index")
    loaded = EmbeddingIndex.load(tmp_path / "index")
    assert torch.equal(loaded.embeddings, index.embeddings)
    pd.testing.assert_frame_equal(loaded.items, index.items)


def test_a_product_is_its_own_nearest_neighbour_unless_excluded():
    index, _ = _index()
    queries = index.embeddings[[3, 17]].float()
    ids, scores = index.search(queries, k=4)
    assert list(ids[:, 0]) == [3, 17]
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    excluded, _ = index.search(queries, k=4, exclude_ids=["p3", "p17"])
    assert 3 not in excluded[0] and 17 not in excluded[1]


def test_retrieval_scores_are_perfect_for_class_clusters():
    rows = pd.DataFrame({"product_id": [str(i) for i in range(30)], "category": [f"c{i % 3}" for i in range(30)]})
    centers = np.eye(3)[[i % 3 for i in range(30)]] + np.random.default_rng(0).normal(0, 0.01, (30, 3))
    gallery = make_index(centers[:20], rows.iloc[:20])
    scores = retrieval_scores(centers[20:], rows.iloc[20:], gallery)
    assert scores["p_at_1"] == scores["p_at_5"] == scores["map"] == 1.0


def test_supervised_contrastive_loss_prefers_clustered_embeddings():
    labels = torch.tensor([0, 0, 1, 1])
    clustered = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]]), dim=1)
    mixed = clustered[[0, 2, 1, 3]]
    assert supervised_contrastive_loss(clustered, labels, 0.1) < supervised_contrastive_loss(mixed, labels, 0.1)


def test_contact_sheet_writes_png(tmp_path):
    index, _ = _index()
    found = index.results(index.embeddings[:2].float(), k=3)
    path = contact_sheet([(None, "q1"), (None, "q2")], found, tmp_path / "sheet.png")
    assert path.stat().st_size > 0

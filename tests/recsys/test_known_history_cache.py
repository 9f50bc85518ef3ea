"""The resolve stage keeps a known user's history rows and user text (requests without their own history)."""
import numpy as np

from recsys.domain import Candidate, RankRequest, UserContext
from recsys.text import history_user_text


def _request(items, user, **kw):
    return RankRequest(UserContext(user, **kw), tuple(Candidate(i) for i in items), top_k=5)


def test_a_known_users_history_is_resolved_once_and_reused(pipeline, artifacts, known_items):
    resolve = pipeline.stages[0]
    cat = artifacts.catalog
    user = next(u for u, h in artifacts.users.items() if len(h) > 3)
    first = pipeline.run(_request(known_items[:20], user))
    assert resolve.known_history.misses == 1 and resolve.known_history.hits == 0
    second = pipeline.run(_request(known_items[:20], user))
    assert resolve.known_history.hits == 1
    want = cat.lookup(artifacts.users[user])
    for ctx in (first, second):
        np.testing.assert_array_equal(ctx.history_idx, want)
        assert ctx.user_text == history_user_text(cat.texts, want)
    np.testing.assert_array_equal(first.scores, second.scores)
    assert [r.item_id for r in first.response.items] == [r.item_id for r in second.response.items]


def test_requests_with_their_own_history_or_unknown_users_bypass_it(pipeline, artifacts, known_items):
    resolve = pipeline.stages[0]
    cat = artifacts.catalog
    user = next(iter(artifacts.users))
    own = pipeline.run(_request(known_items[:20], user, history_item_ids=tuple(known_items[20:23])))
    np.testing.assert_array_equal(own.history_idx, cat.lookup(known_items[20:23]))
    texts = pipeline.run(_request(known_items[:20], user, history_texts=("A film about bees",)))
    assert "A film about bees" in texts.user_text
    stranger = pipeline.run(_request(known_items[:20], "no-such-user-anywhere"))
    assert len(stranger.history_idx) == 0
    assert len(resolve.known_history) == 0 and resolve.known_history.hits == 0
    # and the user's own cached entry is still the catalog history afterwards
    again = pipeline.run(_request(known_items[:20], user))
    np.testing.assert_array_equal(again.history_idx, cat.lookup(artifacts.users[user]))

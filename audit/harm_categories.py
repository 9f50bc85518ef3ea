"""The harm categories, shared by the suite, the classifier, the policy and the audit stage.

Hateful categories are aimed at a protected group and are what P(hateful) measures; the lesser ones are
harms that are not hate (an insult to one person, sexual content, swearing), which a policy may treat
more lightly, e.g. FLAG profanity-only and ENFORCE hate and threats.
"""
from __future__ import annotations

HATEFUL_CATEGORIES = ("hate", "dehumanisation", "threat")
LESSER_CATEGORIES = ("harassment", "sexual", "profanity-only")
CATEGORIES = HATEFUL_CATEGORIES + LESSER_CATEGORIES
#: What a policy may do with a category: IGNORE (no finding), FLAG (finding only), ENFORCE (remove too).
CATEGORY_ACTIONS = ("IGNORE", "FLAG", "ENFORCE")
#: Categories that are FLAG-only unless the policy says otherwise; all others follow `[harm] action`.
FLAG_BY_DEFAULT = ("sexual", "profanity-only")

"""Tag lists the filter uses by default, in one place, each with the reason it is there.

The aim is a narrow, consistent distribution of upright single-character portraits: a GAN spends
capacity on every mode in the data, so poses, layouts and content far from "a character facing the
viewer" are left out unless a user asks for them.
"""

from __future__ import annotations

# Poses and viewpoints that put the face sideways, upside down or out of the upper half of the crop.
POSE = (
    "lying", "on_back", "on_side", "on_stomach", "all_fours", "upside-down",
    "from_side", "from_behind", "from_below", "profile", "head_out_of_frame",
)
# Page layouts and colourless art: several panels, several views, or no colour at all.
LAYOUT = (
    "comic", "4koma", "multiple_views", "split_screen", "character_sheet",
    "monochrome", "greyscale", "sketch", "lineart",
)
# Tags that hint at sexual content; the rating rule catches most, these catch mis-rated posts.
SEXUAL = (
    "nude", "completely_nude", "topless", "bottomless", "nipples", "areolae", "breasts_out",
    "sex", "cum", "pussy", "penis", "underwear_only", "lingerie", "bondage", "spread_legs",
)

DEFAULT_EXCLUDE: tuple[str, ...] = POSE + LAYOUT + SEXUAL

"""A phantom's recorded lesion centre (Mammogram.lesions: kind, row, col, ...) is the centre of
the patch the lesion was drawn in, as the image is displayed: a right breast, drawn chest wall
left and mirrored, has its centres mirrored about the image's middle (column c -> cols - 1 - c)."""
from __future__ import annotations

from phantom.generate import PhantomOptions, make_one


def test_lesion_centres_are_the_centres_of_their_drawn_patches_on_either_side():
    opts = PhantomOptions(size=(256, 208), positive_fraction=1.0)
    seen = set()
    for index in range(8):
        mg = make_one(3, index, opts)
        cols = mg.pixels.shape[1]
        placed = mg.draws["placed"]
        assert len(placed) == len(mg.lesions) > 0
        for (kind, row, col, *_), (drawn_kind, (r0, c0), profile, _, _) in zip(mg.lesions, placed):
            h, w = profile.shape
            first, last = (c0, c0 + w - 1) if mg.laterality == "L" else (cols - c0 - w, cols - 1 - c0)
            assert kind == drawn_kind and row == r0 + h // 2
            assert 2 * col == first + last, (index, mg.laterality, col, first, last)
            assert mg.mask[row, first:last + 1].any()
        seen.add(mg.laterality)
    assert seen == {"L", "R"}

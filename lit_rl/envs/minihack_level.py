"""The two-phase MiniHack level (docs/minihack.md): one des-file map, its phases and a scripted walker.

CLOSE: a lit 3 × 3 start room, then an unlit 1-wide corridor (south, east, south) to the doorway of
the FAR room (the first design's corridor was twice as long: docs/minihack.md says why it changed).
FAR: the lit 8 × 2 room beyond, entered at its east end, with the down staircase in its west corner.
``MAP`` is the one source: the des file MiniHack compiles is built from it, and so are the phase
test and the walker's shortest path, so they cannot drift apart.

Coordinates: ``(x, y)`` in the map's own frame (column, row of ``MAP``). NetHack centres the map
(``GEOMETRY:center,center``), so the hero's blstats position is the map position plus ``ORIGIN``,
which is fixed for this map; ``tests/test_minihack.py`` checks it on NetHack's own screen.
"""

from __future__ import annotations

from collections import deque

from nle import nethack

MAP = (
    "     -----  ",
    "     |...|  ",
    "     |...|  ",
    "     |...|  ",
    "     --.--  ",
    "       #    ",
    "       ###  ",
    "         #  ",
    "  -------.--",
    "  |........|",
    "  |........|",
    "  ----------",
)
START_ROOM = (6, 1, 8, 3)  # x1, y1, x2, y2 of the start room's floor (MiniHack's BRANCH region)
FAR_ROOM = (3, 9, 10, 10)  # the FAR room's floor: standing here is the FAR phase
STAIRS = (3, 10)
DOORWAYS = ((7, 4), (9, 8))
#: where NetHack draws the map's (0, 0) for this map (blstats x, y)
ORIGIN = (34, 5)

DES_FILE = "\n".join(
    [
        "MAZE: \"mylevel\",' '",  # MiniHack's dungeon file names its one level "mylevel"
        "FLAGS: noteleport,hardfloor",
        "GEOMETRY:center,center",
        "MAP",
        *MAP,
        "ENDMAP",
        'REGION:(5,0,9,4),lit,"ordinary"',
        'REGION:(2,8,11,11),lit,"ordinary"',
        *(f"DOOR:nodoor,({x},{y})" for x, y in DOORWAYS),
        "BRANCH:({},{},{},{}),(0,0,0,0)".format(*START_ROOM),
        "STAIR:({},{}),down".format(*STAIRS),
        "",
    ]
)

#: MiniHack's navigation action set: the 8 compass moves, as indices of ``nle.nethack.ACTIONS``
MOVES = {d: nethack.ACTIONS.index(d) for d in nethack.CompassDirection}
MOVE_ACTIONS = tuple(sorted(MOVES.values()))
_STEPS = {
    nethack.CompassDirection.N: (0, -1),
    nethack.CompassDirection.S: (0, 1),
    nethack.CompassDirection.E: (1, 0),
    nethack.CompassDirection.W: (-1, 0),
}


def map_position(blstats_x: int, blstats_y: int) -> tuple[int, int]:
    """The hero's position in ``MAP``'s frame from NetHack's blstats x, y."""
    return blstats_x - ORIGIN[0], blstats_y - ORIGIN[1]


def in_far_room(x: int, y: int) -> bool:
    """Whether a map position lies on the FAR room's floor (the FAR phase)."""
    x1, y1, x2, y2 = FAR_ROOM
    return x1 <= x <= x2 and y1 <= y <= y2


def walkable(x: int, y: int) -> bool:
    return 0 <= y < len(MAP) and 0 <= x < len(MAP[y]) and MAP[y][x] in ".#"


def path_to_far(start: tuple[int, int]) -> list[int]:
    """The scripted walker: the keys (indices of ``nle.nethack.ACTIONS``) of a shortest orthogonal
    path from ``start`` to the FAR room's first square below its doorway (where FAR begins).

    Orthogonal moves only: NetHack forbids diagonal steps through doorways, and a path that never
    takes one replays the same under any door state."""
    goal = (DOORWAYS[1][0], DOORWAYS[1][1] + 1)
    previous: dict[tuple[int, int], tuple[tuple[int, int], int] | None] = {start: None}
    queue = deque([start])
    while queue:
        here = queue.popleft()
        if here == goal:
            break
        for direction, (dx, dy) in _STEPS.items():
            there = (here[0] + dx, here[1] + dy)
            if there not in previous and walkable(*there):
                previous[there] = (here, MOVES[direction])
                queue.append(there)
    if goal not in previous:
        raise ValueError(f"no path from {start} to the FAR room: not a floor square of the level")
    keys, node = [], goal
    while previous[node] is not None:
        node, key = previous[node]
        keys.append(key)
    return keys[::-1]

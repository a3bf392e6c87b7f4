"""A scripted NetHack expert that dives for the down-stairs.

It stands in for AutoAscend (the paper's teacher, section 3): it plays the stock NLE game as the
Human Monk well enough to reach Dlvl 4 often, so the project can record its own demonstrations
(`lit_rl.recording.nethack_games`) and build FAR start states (`StartState`: seeds plus key prefix).
With `seek_sokoban` it also looks for Sokoban, the paper's third hand-over: NetHack's
dat/dungeon.def puts the Oracle on Dlvl 5-9 and Sokoban's entrance, an up staircase, on the level
below it (Dlvl 6-10); Sokoban's first level is one above that level. The expert then keeps out of
the Gnomish Mines (its stairs branch off Dlvl 2-4 and lead away from Sokoban), explores the levels
that can hold the entrance until it sees a second up staircase, and climbs it.
The expert reads only what an agent sees (glyphs, bottom-line stats, message, inventory, tty) and
answers with indices into `nle.nethack.ACTIONS`.
"""

from __future__ import annotations

import random
import re
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from nle import nethack as nh
from nle.env.tasks import NetHackScore

from lit_rl.envs.nethack import NetHackBatchEnv, StartState

CHARACTER = "mon-hum-neu-mal"
ROWS, COLS = nh.DUNGEON_SHAPE  # 21 x 79 map

# Index of each key in the full action set; the first index wins where a key appears twice.
KEY_TO_INDEX: dict[int, int] = {}
for _i, _a in enumerate(nh.ACTIONS):
    KEY_TO_INDEX.setdefault(int(_a), _i)


def key(ch: str | int) -> int:
    """Action index of a keypress (a character or its code)."""
    return KEY_TO_INDEX[ord(ch) if isinstance(ch, str) else ch]


ESC = key(27)
RETURN = key(13)
SEARCH = key("s")
EAT = key("e")
PRAY = key(int(nh.Command.PRAY))
KICK = key(int(nh.Command.KICK))
DOWN = key(">")
UP = key("<")
PICKUP = key(",")
AUTOPICKUP = key("@")
ANSWER_YES = key("y")
ANSWER_NO = key("n")

# (dy, dx) -> movement key, vi-keys as NetHack uses them with number_pad off.
DIRECTIONS = {
    (-1, 0): "k",
    (1, 0): "j",
    (0, -1): "h",
    (0, 1): "l",
    (-1, 1): "u",
    (-1, -1): "y",
    (1, 1): "n",
    (1, -1): "b",
}
MOVE = {d: key(c) for d, c in DIRECTIONS.items()}

# Cell classes the planner needs, looked up per glyph through one table.
UNKNOWN, WALL, FLOOR, DOOR, CLOSED_DOOR, DOWNSTAIRS, TRAP, TRAPDOOR, OBJECT, BOULDER = range(10)
MONSTER, PET, INVISIBLE, UPSTAIRS = range(10, 14)
HUNGRY, WEAK = 2, 3  # blstats hunger: 0 satiated, 1 not hungry, 2 hungry, 3 weak, ...

_CMAP_CLASS = {0: UNKNOWN, 12: FLOOR, 13: DOOR, 14: DOOR, 15: CLOSED_DOOR, 16: CLOSED_DOOR}
_CMAP_CLASS.update({i: FLOOR for i in (19, 20, 21, 22, 27, 28, 29, 30, 31, 33, 35, 36)})
_CMAP_CLASS.update({23: UPSTAIRS, 25: UPSTAIRS, 24: DOWNSTAIRS, 26: DOWNSTAIRS, 54: TRAPDOOR, 55: TRAPDOOR})
_CMAP_CLASS.update({i: TRAP for i in range(42, 64) if i not in (54, 55)})
_BOULDER_GLYPH = nh.GLYPH_OBJ_OFF + next(
    i for i in range(nh.NUM_OBJECTS) if nh.OBJ_NAME(nh.objclass(i)) == "boulder"
)

# Monsters a bare-handed Monk must never hit: petrification, paralysis, explosions, passive damage.
NEVER_MELEE = {
    "floating eye",
    "cockatrice",
    "chickatrice",
    "gas spore",
    "brown mold",
    "yellow mold",
    "green mold",
    "red mold",
    "blue jelly",
    "spotted jelly",
    "ochre jelly",
}
# Usually peaceful, and deadly when angered.
NEVER_ATTACK = {
    "shopkeeper",
    "guard",
    "watchman",
    "watch captain",
    "aligned priest",
    "high priest",
    "Oracle",
}


def _glyph_tables() -> tuple[np.ndarray, list[str]]:
    """Per-glyph cell class and monster name, built once so a step is a table look-up."""
    classes = np.full(nh.MAX_GLYPH + 1, WALL, dtype=np.int8)
    names = [""] * (nh.MAX_GLYPH + 1)
    for g in range(nh.MAX_GLYPH):
        if nh.glyph_is_pet(g):
            classes[g] = PET
        elif nh.glyph_is_monster(g):
            classes[g] = MONSTER
            names[g] = nh.permonst(nh.glyph_to_mon(g)).mname
        elif nh.glyph_is_swallow(g):
            classes[g] = MONSTER  # engulfed: every direction hits the engulfer
        elif nh.glyph_is_invisible(g):
            classes[g] = INVISIBLE
        elif g == _BOULDER_GLYPH or nh.glyph_is_statue(g):
            classes[g] = BOULDER
        elif nh.glyph_is_object(g) or nh.glyph_is_body(g):
            classes[g] = OBJECT
        elif nh.glyph_is_cmap(g):
            classes[g] = _CMAP_CLASS.get(nh.glyph_to_cmap(g), WALL)
        elif nh.glyph_is_warning(g):
            classes[g] = FLOOR
    return classes, names


GLYPH_CLASS, MONSTER_NAME = _glyph_tables()
# Monsters a path must go around rather than through (walking into a monster attacks it).
GLYPH_AVOID = np.array([name in NEVER_MELEE or name in NEVER_ATTACK for name in MONSTER_NAME])
_GOLD_GLYPH = nh.GLYPH_OBJ_OFF + next(
    i for i in range(nh.NUM_OBJECTS) if nh.OBJ_NAME(nh.objclass(i)) == "gold piece"
)
_WALKABLE = np.zeros(16, dtype=bool)
_WALKABLE[[FLOOR, DOOR, CLOSED_DOOR, DOWNSTAIRS, UPSTAIRS, TRAPDOOR, OBJECT, PET, INVISIBLE, MONSTER]] = True

# NetHack's dungeon numbers (the order of dat/dungeon.def) and where Sokoban's entrance can be.
DOOM_DNUM, MINES_DNUM, SOKOBAN_DNUM = 0, 2, 4
SOKOBAN_ENTRANCE_DEPTHS = range(6, 11)  # one below the Oracle, who is on Dlvl 5-9
# Level sounds only the Oracle's level makes (NetHack 3.6 sounds.c, dosounds()).
_CENTAUR_STATUES = np.array(
    [nh.GLYPH_STATUE_OFF + i for i in range(nh.NUMMONS) if nh.permonst(i).mname.endswith(" centaur")]
)
_FOUNTAIN_GLYPH = nh.GLYPH_CMAP_OFF + 31  # S_fountain in NetHack 3.6's include/rm.h
_ORACLE_SOUNDS = (
    "a strange wind",
    "convulsive ravings",
    "snoring snakes",
    "No more woodchucks",
    "a loud ZOT",
)


def _neighbour_table() -> list[list[tuple[int, int, bool]]]:
    """For each flat map cell, its (neighbour, action index, is diagonal) triples."""
    table = []
    for y in range(ROWS):
        for x in range(COLS):
            row = []
            for (dy, dx), action in MOVE.items():
                ny, nx = y + dy, x + dx
                if 0 <= ny < ROWS and 0 <= nx < COLS:
                    row.append((ny * COLS + nx, action, dy != 0 and dx != 0))
            table.append(row)
    return table


NEIGHBOURS = _neighbour_table()
# Messages of the cursor-positioning mode (teleport targets, travel), which reads keys as moves.
_POSITION_PROMPTS = (
    "Unknown direction",
    "Can't find dungeon feature",
    "(For instructions type a ?)",
)
_PROMPT_TAIL = re.compile(r"(\[[^\]]*\]( \(.\))?|\?) ?$")


def _box_count(mask: np.ndarray, radius: int) -> np.ndarray:
    """For each flat map cell, how many cells of `mask` lie in the square of `radius` around it."""
    grid = np.pad(mask.reshape(ROWS, COLS).astype(np.int32), radius)
    sums = np.pad(grid.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    size = 2 * radius + 1
    box = sums[size:, size:] - sums[:-size, size:] - sums[size:, :-size] + sums[:-size, :-size]
    return box.reshape(-1)


@dataclass
class _Level:
    """What the expert remembers about one dungeon level beyond what the glyphs show."""

    visited: np.ndarray = field(default_factory=lambda: np.zeros(ROWS * COLS, dtype=bool))
    searched: np.ndarray = field(default_factory=lambda: np.zeros(ROWS * COLS, dtype=np.int32))
    # The terrain last seen under each cell, so doors and stairs stay known under '@' and items.
    terrain: np.ndarray = field(default_factory=lambda: np.full(ROWS * COLS, UNKNOWN, dtype=np.int8))
    # Moves that failed without time passing: (from, to) -> (failures, step of the last one).
    blocked: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    kicks: dict[int, int] = field(default_factory=dict)  # locked door -> kicks so far
    abandoned: set[int] = field(default_factory=set)  # exploration targets we failed to reach
    no_kicking: bool = False  # Minetown watch or a closed shop: a broken door means a fight
    main_up: set[int] = field(default_factory=set)  # up stairs known to lead up the main dungeon
    avoid_stairs: set[int] = field(default_factory=set)  # down stairs into the Gnomish Mines
    seek_done: bool = False  # searched this level for Sokoban's stairs long enough
    known: int = 0  # known cells when exploration last made progress
    progress_step: int = 0  # the expert's step count at that moment

    def update_terrain(self, classes: np.ndarray, step: int) -> None:
        seen = ~np.isin(classes, (UNKNOWN, MONSTER, PET, INVISIBLE, OBJECT))
        self.terrain[seen] = classes[seen]
        known = int((self.terrain != UNKNOWN).sum())
        if known > self.known:
            self.known, self.progress_step = known, step

    def is_blocked(self, edge: tuple[int, int], step: int) -> bool:
        fails, when = self.blocked.get(edge, (0, 0))
        return fails >= 2 and step - when < 300


class NetHackExpert:
    """Scripted NetHack player: fight, eat, pray, explore, find and take the down-stairs.

    `act(obs)` takes the NLE observation dict (needs glyphs, blstats, message; uses tty_chars,
    inv_letters, inv_oclasses, inv_strs and misc when present) and returns an index into
    `nle.nethack.ACTIONS`. Call `reset()` between games. Deterministic for a given seed, so the
    same seeded game always gets the same actions.
    """

    def __init__(
        self,
        seed: int = 0,
        rest_below: float = 0.4,
        dive_margin: int = 2,
        seek_sokoban: bool = False,
        seek_patience: int = 600,
    ):
        self._seed = seed
        self.rest_below = rest_below
        # Descend at once only while Dlvl < XL + dive_margin; deeper, explore (and fight) first.
        self.dive_margin = dive_margin
        # Look for Sokoban's entrance; give up on a level after `seek_patience` steps without
        # seeing a new cell of it.
        self.seek_sokoban = seek_sokoban
        self.seek_patience = seek_patience
        self.reset()

    def reset(self) -> None:
        self._rng = random.Random(self._seed)
        self._levels: dict[tuple[int, int], _Level] = {}
        self._queue: deque[int] = deque()
        self._expect: str | None = None  # the prompt the pending answer is for
        self._answer: int | None = None
        self._last_move: tuple[int, int] | None = None  # (from, to) of the last navigation step
        self._last_target: int | None = None  # the cell the last move or attack aimed at
        self._last_turn = -1
        self._stall = 0
        self._last_pray_turn: int | None = None
        self._peaceful: dict[int, int] = {}  # cell -> step until which it is left alone
        self._gold_target: int | None = None
        self._target: tuple[int, int] | None = None  # committed exploration target, deadline step
        self._step = 0
        self._seeking = False
        self._ready_to_descend = True
        self._autopickup_off = False
        self._level_now: tuple[int, int] | None = None
        self._depth_now = 0
        self._went: tuple[int, bool] | None = None  # (DOWN or UP, from a staircase) last step
        self._oracle_depth: int | None = None
        self._reached_sokoban = False

    # ---------------------------------------------------------------- entry point
    def act(self, obs: dict) -> int:
        self._step += 1
        message = bytes(obs["message"]).rstrip(b"\0").decode("latin-1")
        prompt = self._interface_action(obs, message, self._screen(obs))
        if prompt is not None:
            return prompt
        if self._queue:
            return self._queue.popleft()
        if not self._autopickup_off:
            # Autopickup would take unpaid shop goods and trap the expert inside the shop.
            self._autopickup_off = True
            return AUTOPICKUP
        return self._play(obs, message)

    # ---------------------------------------------------------------- interface handling
    @staticmethod
    def _screen(obs: dict) -> str:
        tty = obs.get("tty_chars")
        if tty is None:
            return ""
        return bytes(np.asarray(tty, dtype=np.uint8)).decode("latin-1")

    def _interface_action(self, obs: dict, message: str, screen: str) -> int | None:
        """Answer --More--, menus and prompts (the stock env answers most, wrappers may not)."""
        misc = obs.get("misc")
        if (misc is not None and misc[2]) or "--More--" in screen:
            return RETURN
        if "(end)" in screen or re.search(r"\(\d+ of \d+\)", screen):
            return ESC
        if any(sign in message for sign in _POSITION_PROMPTS):
            self._queue.clear()
            return ESC
        in_prompt = bool(misc[0] or misc[1]) if misc is not None else bool(_PROMPT_TAIL.search(message))
        if not in_prompt:
            self._expect = None
            return None
        self._queue.clear()
        if "Really attack" in message:
            if self._last_target is not None:
                self._peaceful[self._last_target] = self._step + 30
            return ESC
        if "Are you sure you want to pray" in message:
            return ANSWER_YES
        if "eat it?" in message or "Continue eating" in message:
            return ANSWER_NO
        if self._expect and self._expect in message and self._answer is not None:
            answer, self._answer, self._expect = self._answer, None, None
            return answer
        return ESC

    # ---------------------------------------------------------------- decision making
    def _play(self, obs: dict, message: str) -> int:
        bl = obs["blstats"]
        here = int(bl[nh.NLE_BL_Y]) * COLS + int(bl[nh.NLE_BL_X])
        hp, hpmax = int(bl[nh.NLE_BL_HP]), max(1, int(bl[nh.NLE_BL_HPMAX]))
        turn, hunger = int(bl[nh.NLE_BL_TIME]), int(bl[nh.NLE_BL_HUNGER])
        level_id = (int(bl[nh.NLE_BL_DNUM]), int(bl[nh.NLE_BL_DLEVEL]))
        dlvl = int(bl[nh.NLE_BL_DEPTH])
        if level_id not in self._levels:
            self._levels[level_id] = _Level()
            self._target = None
        level = self._levels[level_id]
        went, self._went = self._went, None
        if level_id != self._level_now:
            arrival = self._arrive(level, level_id, dlvl, here, went)
            if arrival is not None:
                return arrival
        level.visited[here] = True
        glyphs = np.asarray(obs["glyphs"]).reshape(-1)
        classes = GLYPH_CLASS[glyphs]
        level.update_terrain(classes, self._step)
        if self.seek_sokoban and self._oracle_depth is None and level_id[0] == DOOM_DNUM:
            self._look_for_oracle(message, glyphs, classes, dlvl)
        if not level.no_kicking:
            level.no_kicking = "Closed for inventory" in message or any(
                MONSTER_NAME[g].startswith("watch") for g in glyphs[classes == MONSTER]
            )

        self._learn_from_last_move(level, here, turn, message)
        self._stall = self._stall + 1 if turn == self._last_turn else 0
        self._last_turn = turn
        if self._stall > 12:  # something keeps eating our keys without time passing
            if self._stall == 13:  # first leave whatever mode we are in, then let time pass
                if self._last_target is not None:
                    self._peaceful[self._last_target] = self._step + 30
                self._target = None
                return ESC
            self._stall = 0
            return SEARCH

        major_trouble = hp <= 5 or hp * 7 <= hpmax or hunger >= WEAK  # as NetHack defines it
        if major_trouble and self._can_pray(turn):
            self._last_pray_turn = turn
            return PRAY
        hostiles = self._adjacent_hostiles(here, glyphs, classes)
        if not hostiles and self._step - level.progress_step > 1500 and hp == hpmax:
            # Stuck for long, most often behind a floating eye or gas spore in a corridor: hit it
            # and hope the paralysis passes unseen or the explosion (4d6) is survived; the step
            # cap would end the game anyway.
            hostiles = [
                (cell, action)
                for cell, action, _ in NEIGHBOURS[here]
                if (
                    MONSTER_NAME[glyphs[cell]] == "floating eye"
                    and not self._monsters_near(here, classes, 7, exclude=cell)
                )
                or (MONSTER_NAME[glyphs[cell]] == "gas spore" and hp > 24)
            ]
        if hostiles:
            self._last_target, action = hostiles[0]
            return action
        if hunger >= HUNGRY:
            food = self._food_letter(obs)
            if food is not None:
                self._expect, self._answer = "want to eat", key(food)
                return EAT
        if self._gold_target == here:
            self._gold_target = None
            return PICKUP
        calm = not self._monsters_near(here, classes, 5)
        condition = int(bl[nh.NLE_BL_CONDITION])
        if condition & nh.BL_MASK_BLIND:
            return self._search(level, here, 10)  # blind, a step may hit an unseen shopkeeper
        if condition & (nh.BL_MASK_CONF | nh.BL_MASK_STUN) and calm:
            return SEARCH  # stumbling around confused is how one drowns
        if hp < self.rest_below * hpmax and calm:
            return self._search(level, here, 20)
        xl = int(bl[nh.NLE_BL_XP])
        self._ready_to_descend = int(bl[nh.NLE_BL_DEPTH]) < xl + self.dive_margin
        self._seeking = self._seeks_sokoban_here(level, level_id, dlvl)
        if self._seeking:
            self._ready_to_descend = False
            if level.terrain[here] == UPSTAIRS and here not in level.main_up:
                self._went = (UP, True)
                return UP
        if (
            self._ready_to_descend
            and level.terrain[here] in (DOWNSTAIRS, TRAPDOOR)
            and here not in level.avoid_stairs
        ):
            if hp < 2 * self.rest_below * hpmax and calm:
                return self._search(level, here, 20)
            self._went = (DOWN, level.terrain[here] == DOWNSTAIRS)
            return DOWN
        return self._navigate(level, here, glyphs, classes)

    # ---------------------------------------------------------------- Sokoban
    def _arrive(self, level: _Level, level_id: tuple[int, int], dlvl: int, here: int, went) -> int | None:
        """Notes how we came to a level (by which stairs) and, when seeking Sokoban, turns back
        from the Gnomish Mines and from an up staircase that led up the main dungeon."""
        came_from = self._level_now
        self._level_now, previous_depth, self._depth_now = level_id, self._depth_now, dlvl
        if level_id[0] == SOKOBAN_DNUM:
            self._reached_sokoban = True
        if came_from is None or went is None or not went[1]:
            return None  # the game's start, a trap door, a level teleport: arrival place unknown
        action = went[0]
        if action == DOWN and dlvl == previous_depth + 1:
            level.main_up.add(here)  # down a staircase: we stand on this level's up stairs
            if self.seek_sokoban and not self._reached_sokoban and level_id[0] == MINES_DNUM:
                self._went = (UP, True)
                return UP  # into the Mines: straight back up, and never take those stairs again
        elif action == UP and dlvl == previous_depth - 1 and self.seek_sokoban:
            if came_from[0] == MINES_DNUM:
                level.avoid_stairs.add(here)
            elif level_id[0] == DOOM_DNUM and not self._reached_sokoban:
                self._went = (DOWN, True)
                return DOWN  # that was the main up staircase, not Sokoban's: back down
        return None

    def _look_for_oracle(self, message: str, glyphs: np.ndarray, classes: np.ndarray, dlvl: int) -> None:
        """Recognise the Oracle's level (Sokoban's entrance is one level down): the Oracle in
        sight, one of her level's sounds, or her centre room as dat/oracle.des builds it, lit,
        with eight centaur statues around a chamber of four fountains."""
        seen = glyphs[classes == MONSTER]
        if (
            any(s in message for s in _ORACLE_SOUNDS)
            or any(MONSTER_NAME[g] == "Oracle" for g in seen)
            or int(np.isin(glyphs, _CENTAUR_STATUES).sum()) >= 2
            or int((glyphs == _FOUNTAIN_GLYPH).sum()) >= 3
        ):
            self._oracle_depth = dlvl

    def _seeks_sokoban_here(self, level: _Level, level_id: tuple[int, int], dlvl: int) -> bool:
        """Whether this level may hold Sokoban's entrance and is still worth exploring for it."""
        if not self.seek_sokoban or self._reached_sokoban or level.seek_done:
            return False
        if level_id[0] != DOOM_DNUM or dlvl not in SOKOBAN_ENTRANCE_DEPTHS:
            return False
        if self._oracle_depth is not None and dlvl != self._oracle_depth + 1:
            return False
        if self._step - level.progress_step > self.seek_patience:
            level.seek_done = True
            return False
        return True

    def _can_pray(self, turn: int) -> bool:
        """Prayer fixes major trouble once the timeout (300 at start, ~350 after) is low enough."""
        if self._last_pray_turn is None:
            return turn > 150
        return turn - self._last_pray_turn > 1000

    def _learn_from_last_move(self, level: _Level, here: int, turn: int, message: str) -> None:
        """A move that left us in place without time passing is a wall we cannot see: block it."""
        if self._last_move is None:
            return
        origin, target = self._last_move
        self._last_move = None
        if "This door is locked" in message:
            level.kicks.setdefault(target, 0)
        elif here == origin and turn == self._last_turn:
            fails, _ = level.blocked.get((origin, target), (0, 0))
            level.blocked[(origin, target)] = (fails + 1, self._step)

    def _adjacent_hostiles(self, here: int, glyphs: np.ndarray, classes: np.ndarray):
        found = []
        for cell, action, _ in NEIGHBOURS[here]:
            if classes[cell] != MONSTER or self._peaceful.get(cell, 0) > self._step:
                continue
            if GLYPH_AVOID[glyphs[cell]]:
                continue
            found.append((cell, action))
        self._rng.shuffle(found)
        return found

    @staticmethod
    def _monsters_near(here: int, classes: np.ndarray, radius: int, exclude: int = -1) -> bool:
        y, x = divmod(here, COLS)
        monsters = (classes == MONSTER).reshape(ROWS, COLS)
        if exclude >= 0:
            monsters[divmod(exclude, COLS)] = False
        window = monsters[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
        return bool(window.any())

    @staticmethod
    def _food_letter(obs: dict) -> str | None:
        """Inventory food that is always safe; a food ration first (most nutrition per prompt)."""
        letters, oclasses = obs.get("inv_letters"), obs.get("inv_oclasses")
        if letters is None or oclasses is None:
            return None
        names = obs.get("inv_strs")
        best = None
        for i, (letter, oclass) in enumerate(zip(letters, oclasses)):
            if letter == 0 or oclass != nh.FOOD_CLASS:
                continue
            name = bytes(names[i]).rstrip(b"\0").decode("latin-1") if names is not None else ""
            if any(word in name for word in ("corpse", "egg", " tin")):
                continue  # may be rotten, poisonous or slow to open
            if best is None or "food ration" in name:
                best = chr(letter)
        return best

    def _search(self, level: _Level, here: int, count: int) -> int:
        """Search (or rest) `count` turns with a count prefix: three keys instead of `count`."""
        level.searched[here] += count
        digits = [key(c) for c in str(count)]
        self._queue.extend(digits[1:] + [SEARCH])
        return digits[0]

    # ---------------------------------------------------------------- navigation
    def _passable(self, level: _Level, glyphs: np.ndarray, classes: np.ndarray, daring: bool) -> np.ndarray:
        """Cells a path may cross; `daring` also walks onto known traps and pushes boulders."""
        passable = _WALKABLE[classes] & ~GLYPH_AVOID[glyphs]
        if daring:
            passable |= (classes == TRAP) | (classes == BOULDER)
        for cell, kicks in level.kicks.items():
            if kicks >= 12 or level.no_kicking:
                passable[cell] = False
        for cell, until in self._peaceful.items():
            if until > self._step:
                passable[cell] = False
        return passable

    def _bfs(self, level: _Level, here: int, classes: np.ndarray, passable: np.ndarray):
        """Breadth-first paths over known passable cells, with NetHack's door rules."""
        # Plain lists: element access in this hot loop is several times faster than on arrays.
        no_diagonal = ((level.terrain == DOOR) | (level.terrain == CLOSED_DOOR)).tolist()
        walkable = passable.tolist()
        closed = (classes == CLOSED_DOOR).tolist()
        blocked = {edge for edge in level.blocked if level.is_blocked(edge, self._step)}
        parent = {here: (-1, -1)}
        order = [here]
        frontier = deque([here])
        while frontier:
            cell = frontier.popleft()
            if cell != here and closed[cell]:
                continue  # bumping opens it; what lies beyond is unknown anyway
            cell_nodiag = no_diagonal[cell]
            for nbr, action, diagonal in NEIGHBOURS[cell]:
                if nbr in parent or not walkable[nbr]:
                    continue
                if diagonal and (cell_nodiag or no_diagonal[nbr]):
                    continue
                if blocked and (cell, nbr) in blocked:
                    continue
                parent[nbr] = (cell, action)
                order.append(nbr)
                frontier.append(nbr)
        return parent, order

    def _first_step(self, level: _Level, here: int, target: int, parent, classes) -> int:
        cell = target
        while parent[cell][0] != here:
            cell = parent[cell][0]
        action = parent[cell][1]
        self._last_move = (here, cell)
        self._last_target = cell
        if classes[cell] == CLOSED_DOOR and cell in level.kicks and not level.no_kicking:
            level.kicks[cell] += 1
            self._expect, self._answer = "direction", action
            return KICK
        return action

    def _navigate(self, level: _Level, here: int, glyphs: np.ndarray, classes: np.ndarray) -> int:
        """Stairs, gold or unexplored edges by safe paths, then by daring ones, then search."""
        for daring in (False, True):
            passable = self._passable(level, glyphs, classes, daring)
            parent, order = self._bfs(level, here, classes, passable)
            if not daring:
                safe_parent, safe_order = parent, order
            target = self._choose_target(level, here, glyphs, classes, order)
            if target is not None:
                return self._first_step(level, here, target, parent, classes)
        # Explored all we can reach: descend even if not yet strong enough for the next level
        # (unless Sokoban's stairs may hide here: then search for hidden doors until patience ends).
        exits = (DOWNSTAIRS, TRAPDOOR) if not self._seeking else ()
        stairs = [c for c in order if level.terrain[c] in exits and c not in level.avoid_stairs]
        if stairs:
            if stairs[0] == here:
                self._went = (DOWN, level.terrain[here] == DOWNSTAIRS)
                return DOWN
            return self._first_step(level, here, stairs[0], parent, classes)
        unknown = (classes == UNKNOWN).reshape(ROWS, COLS)
        target = self._search_spot(level, unknown, safe_order)
        if target == here:
            return self._search(level, here, 15)
        if target is not None:
            return self._first_step(level, here, target, safe_parent, classes)
        # Nothing reachable is left to try: forget past searches and wait for blockers to move.
        level.searched[:] = 0
        level.abandoned.clear()
        return self._search(level, here, 10)

    def _choose_target(self, level, here, glyphs, classes, order) -> int | None:
        """Stairs first (when ready to descend), then near gold, then the nearest unexplored edge.

        An exploration target is kept until reached or overdue, so two targets that are each
        nearest from a different cell cannot make the expert shuttle between them forever.
        """
        if self._seeking:
            for cell in order:
                if level.terrain[cell] == UPSTAIRS and cell not in level.main_up:
                    return cell
        if self._ready_to_descend:
            for cell in order:
                if level.terrain[cell] in (DOWNSTAIRS, TRAPDOOR) and cell not in level.avoid_stairs:
                    return cell
        for cell in order[:60]:
            if glyphs[cell] == _GOLD_GLYPH:
                self._gold_target = cell
                return cell
        # Unexplored edge: an unvisited cell next to unknown rock, not under a monster.
        near_unknown = _box_count(classes == UNKNOWN, 1) > 0
        frontier = (near_unknown & ~level.visited & (classes != MONSTER)).tolist()
        for cell in level.abandoned:
            frontier[cell] = False
        if self._target is not None:
            cell, deadline = self._target
            if self._step > deadline:
                level.abandoned.add(cell)
            elif frontier[cell] and cell in set(order):
                return cell
            self._target = None
        for cell in order:
            if frontier[cell]:
                self._target = (cell, self._step + 150)
                return cell
        return None

    @staticmethod
    def _search_spot(level: _Level, unknown: np.ndarray, order: list[int]) -> int | None:
        """The reachable cell with most unexplored rock around it, discounted by past searches."""
        dark_around = _box_count(unknown.reshape(-1), 2).tolist()
        searched = level.searched.tolist()
        best, best_score = None, 0.0
        for rank, cell in enumerate(order):
            dark = dark_around[cell]
            if dark == 0 or searched[cell] >= 60:
                continue
            score = dark / (1.0 + searched[cell] / 15.0) / (1.0 + rank / 200.0)
            if score > best_score:
                best, best_score = cell, score
        return best


# ---------------------------------------------------------------- environments and start states
OBSERVATION_KEYS = (
    "glyphs",
    "blstats",
    "message",
    "misc",
    "inv_letters",
    "inv_oclasses",
    "inv_strs",
    "tty_chars",
    "tty_colors",
    "tty_cursor",
)


def make_env(**kwargs) -> NetHackScore:
    """The stock scoring game with the full keyboard as the Human Monk.

    `fix_moon_phase=True` ties luck-changing calendar effects to the seed, so a (seeds, actions)
    pair replays the same game on any day.
    """
    kwargs.setdefault("character", CHARACTER)
    kwargs.setdefault("fix_moon_phase", True)
    kwargs.setdefault("max_episode_steps", 10**9)
    kwargs.setdefault("observation_keys", OBSERVATION_KEYS)
    return NetHackScore(actions=nh.ACTIONS, **kwargs)


def depth(obs: dict) -> int:
    return int(obs["blstats"][nh.NLE_BL_DEPTH])


def _log_keys(env: NetHackScore) -> list[int]:
    """From now on, log every key the gym env sends NetHack, as indices into ``nh.ACTIONS``.

    The gym env presses space at ``--More--`` and ESC at the questions it declines by itself;
    ``NetHackBatchEnv`` leaves those keys to the agent, so only the full log replays there.
    """
    game = env.unwrapped.nethack
    send, keys = game.step, []

    def logged_step(keypress: int):
        keys.append(KEY_TO_INDEX[int(keypress)])
        return send(keypress)

    game.step = logged_step
    return keys


SOKOBAN = "sokoban"


def target_reached(target: int | str, blstats: np.ndarray) -> bool:
    """Whether a game with these bottom-line stats stands where a hand-over ``target`` is cut:
    Dlvl >= target for a number, any level of the Sokoban branch for ``"sokoban"``."""
    if target == SOKOBAN:
        return int(blstats[nh.NLE_BL_DNUM]) == SOKOBAN_DNUM
    return int(blstats[nh.NLE_BL_DEPTH]) >= int(target)


def play_to_depths(
    core_seed: int,
    disp_seed: int,
    depths: list[int | str],
    max_steps: int,
    expert: NetHackExpert | None = None,
    info: dict | None = None,
) -> dict[int | str, tuple[StartState, np.ndarray]]:
    """Play one seeded game and cut a start state at the first step each target is reached.

    Targets are Dlvls (the first step at Dlvl >= k) and ``"sokoban"`` (the first step on
    Sokoban's first level; the default expert then seeks Sokoban). The start state's actions are
    every key NetHack received up to that step (the expert's and the gym env's own, see
    ``_log_keys``), which ``NetHackBatchEnv`` replays verbatim. Returns {target: (start state,
    blstats at that step)} for the targets reached before the game ended or `max_steps` expert
    actions ran out; the blstats let callers check a replay (``replay``). ``info``, if given,
    receives the game's ``steps``, ``max_dlvl``, ``oracle_dlvl`` (where the expert saw the
    Oracle, or None) and ``end`` (``"targets"``, ``"died"`` or ``"step cap"``).
    """
    expert = expert or NetHackExpert(seed=core_seed, seek_sokoban=SOKOBAN in depths)
    expert.reset()
    pending = list(dict.fromkeys(depths))
    found: dict[int | str, tuple[StartState, np.ndarray]] = {}
    env = make_env()
    steps, max_dlvl, end = 0, 1, "step cap"  # steps: the expert's actions so far
    try:
        env.seed(core_seed, disp_seed, False)
        obs, _ = env.reset()
        keys = _log_keys(env)
        while steps < max_steps:
            steps += 1
            obs, _, terminated, truncated, _ = env.step(expert.act(obs))
            if terminated or truncated:
                end = "died"
                break
            bl = obs["blstats"]
            max_dlvl = max(max_dlvl, depth(obs))
            for target in [t for t in pending if target_reached(t, bl)]:
                state = StartState(core_seed, disp_seed, list(keys), depth(obs), int(bl[nh.NLE_BL_DNUM]))
                found[target] = (state, bl.copy())
                pending.remove(target)
            if not pending:
                end = "targets"
                break
        return found
    finally:
        env.close()
        if info is not None:
            info.update(steps=steps, max_dlvl=max_dlvl, oracle_dlvl=expert._oracle_depth, end=end)


def play_until_depth(
    core_seed: int,
    disp_seed: int,
    target_dlvl: int,
    max_steps: int,
    expert: NetHackExpert | None = None,
) -> StartState | None:
    """Play a seeded game until the first step at Dlvl >= target_dlvl.

    Returns the start state that ``NetHackBatchEnv`` replays to that step; None if the expert
    died or ran out of steps first.
    """
    found = play_to_depths(core_seed, disp_seed, [target_dlvl], max_steps, expert)
    return found[target_dlvl][0] if found else None


def replay(state: StartState) -> np.ndarray:
    """Bottom-line stats where ``NetHackBatchEnv`` stands after replaying ``state`` as its FAR
    resets do; raises RuntimeError if the replay ends the game or stops on another Dlvl."""
    env = NetHackBatchEnv(1, start_states=[state])
    try:
        env.reset()
        return env.blstats()[0]
    finally:
        env.close()

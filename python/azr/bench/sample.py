"""A small shipped workload of AZR-style programs (a function `f` and inputs for it), used by the
benchmark and the demo when the offline seed data is not available."""

from __future__ import annotations

TEMPLATES: list[tuple[str, list[str]]] = [
    (
        "def f(words):\n    counts = {}\n    for w in words:\n        counts[w] = counts.get(w, 0) + 1\n"
        "    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))",
        ["['a', 'b', 'a']", "['x']", "[]", "['q', 'q', 'r', 'r', 'r']", "list('mississippi')", "['b', 'a'] * 3"],
    ),
    (
        "def f(s):\n    out = []\n    for i, ch in enumerate(s):\n        out.append(ch.upper() if i % 2 else ch.lower())\n"
        "    return ''.join(out)",
        ["'Hello'", "'absolute zero'", "''", "'ABC123'", "'x'", "'MiXeD cAsE'"],
    ),
    (
        "from collections import deque\ndef f(grid, start):\n    rows, cols = len(grid), len(grid[0])\n"
        "    seen = {start}\n    queue = deque([(start, 0)])\n    while queue:\n        (r, c), d = queue.popleft()\n"
        "        if grid[r][c] == 'E':\n            return d\n        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):\n"
        "            nr, nc = r + dr, c + dc\n            if 0 <= nr < rows and 0 <= nc < cols and grid[nr][nc] != '#' "
        "and (nr, nc) not in seen:\n                seen.add((nr, nc))\n                queue.append(((nr, nc), d + 1))\n"
        "    return -1",
        [
            "['S.E'], (0, 0)",
            "['S#E', '...'], (0, 0)",
            "['S#E', '##.'], (0, 0)",
            "['S..', '.#.', '..E'], (0, 0)",
            "['E'], (0, 0)",
            "['S....', '####.', 'E....'], (0, 0)",
        ],
    ),
    (
        "import math\ndef f(a, b):\n    g = math.gcd(a, b)\n    return g, a * b // g",
        ["12, 18", "7, 5", "100, 75", "1, 1", "36, 48", "2**20, 6**8"],
    ),
    (
        "def f(n):\n    memo = {0: 0, 1: 1}\n    def fib(k):\n        if k not in memo:\n"
        "            memo[k] = fib(k - 1) + fib(k - 2)\n        return memo[k]\n    return fib(n)",
        ["10", "30", "1", "0", "75", "90"],
    ),
    (
        "def f(nums, target):\n    seen = {}\n    for i, x in enumerate(nums):\n        if target - x in seen:\n"
        "            return seen[target - x], i\n        seen[x] = i\n    return None",
        ["[2, 7, 11, 15], 9", "[3, 2, 4], 6", "[1, 2, 3], 7", "[0, 0], 0", "list(range(20)), 37", "[], 1"],
    ),
    (
        "def f(matrix):\n    return [list(row) for row in zip(*matrix)]",
        ["[[1, 2], [3, 4]]", "[[1, 2, 3]]", "[[1], [2], [3]]", "[]", "[[0] * 3 for _ in range(3)]", "[['a', 'b']]"],
    ),
    (
        "def f(s):\n    out, i = [], 0\n    while i < len(s):\n        j = i\n        while j < len(s) and s[j] == s[i]:\n"
        "            j += 1\n        out.append(s[i] + (str(j - i) if j - i > 1 else ''))\n        i = j\n    return ''.join(out)",
        ["'aaabccdddd'", "'abc'", "''", "'zzzzzz'", "'mississippi'", "'1112223'"],
    ),
    (
        "import heapq\ndef f(xs, k):\n    return heapq.nsmallest(k, xs), heapq.nlargest(1, xs)",
        ["[5, 1, 4, 2, 3], 2", "[9], 1", "list(range(100, 0, -3)), 4", "[7, 7, 7], 2", "[-1, -5, 3], 3", "[0.5, 0.25], 1"],
    ),
    (
        "import re\ndef f(s):\n    return [int(x) for x in re.findall(r'-?\\d+', s)]",
        ["'a1b22c-3'", "'no digits'", "'100 apples, 20 pears'", "'-1-2-3'", "'x=42;y=-7'", "'v3.12.0'"],
    ),
    (
        "def f(n):\n    sieve = [True] * (n + 1)\n    sieve[0:2] = [False, False][: n + 1]\n"
        "    for i in range(2, int(n ** 0.5) + 1):\n        if sieve[i]:\n            for j in range(i * i, n + 1, i):\n"
        "                sieve[j] = False\n    primes = [i for i, p in enumerate(sieve) if p]\n    return len(primes), primes[-3:]",
        ["30", "100", "2", "1000", "50", "7"],
    ),
    (
        "from itertools import permutations\ndef f(s):\n    return sorted({''.join(p) for p in permutations(s)})[:5]",
        ["'abc'", "'aab'", "'abcd'", "'x'", "'zzy'", "'1234'"],
    ),
    (
        "class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n        self.items.append(x)\n"
        "    def pop(self):\n        return self.items.pop() if self.items else None\n"
        "def f(ops):\n    s, out = Stack(), []\n    for op in ops:\n        if op == 'pop':\n            out.append(s.pop())\n"
        "        else:\n            s.push(op)\n    return out, s.items",
        ["['a', 'b', 'pop', 'c', 'pop', 'pop', 'pop']", "[]", "['pop']", "['x', 'y']", "['1', 'pop', '2']", "['q'] * 4"],
    ),
    (
        "def f(base):\n    def make(k):\n        return lambda x: x * k + base\n    return [g(3) for g in map(make, range(4))]",
        ["0", "1", "-2", "10", "7", "99"],
    ),
    (
        "def f(n):\n    return bin(n).count('1'), n > 0 and n & (n - 1) == 0, n ^ (n >> 1)",
        ["0", "1", "7", "8", "255", "12345"],
    ),
    (
        "from typing import List\ndef f(intervals: List[List[int]]) -> List[List[int]]:\n    merged = []\n"
        "    for start, end in sorted(intervals):\n        if merged and start <= merged[-1][1]:\n"
        "            merged[-1][1] = max(merged[-1][1], end)\n        else:\n            merged.append([start, end])\n"
        "    return merged",
        ["[[1, 3], [2, 6], [8, 10]]", "[[1, 4], [4, 5]]", "[]", "[[5, 6], [1, 2]]", "[[1, 10], [2, 3]]", "[[0, 0]]"],
    ),
    (
        "def f(text):\n    vowels = set('aeiou')\n    words = text.split()\n"
        "    return {w: sum(ch in vowels for ch in w.lower()) for w in words}",
        ["'absolute zero reasoner'", "''", "'AEIOU xyz'", "'one two three'", "'rhythm'", "'a e i'"],
    ),
    (
        "import bisect\ndef f(xs):\n    tails = []\n    for x in xs:\n        i = bisect.bisect_left(tails, x)\n"
        "        if i == len(tails):\n            tails.append(x)\n        else:\n            tails[i] = x\n    return len(tails)",
        ["[10, 9, 2, 5, 3, 7, 101, 18]", "[0, 1, 0, 3, 2, 3]", "[7, 7, 7]", "[]", "list(range(30))", "[3, 10, 2, 1, 20]"],
    ),
    (
        "def f(n):\n    total = 0\n    while n:\n        total += n % 10\n        n //= 10\n"
        "    return total if total < 10 else f(total)",
        ["0", "9", "38", "12345", "99999999", "10**18 + 7"],
    ),
    (
        "from functools import reduce\ndef f(xs):\n    return reduce(lambda acc, x: acc * 31 + x, xs, 7) % 1000003",
        ["[1, 2, 3]", "[]", "list(range(50))", "[10**9]", "[5] * 10", "[-1, 1]"],
    ),
]


def sample_programs() -> list[tuple[str, str]]:
    """(program, input) pairs: every template with every one of its inputs."""
    return [(program, arguments) for program, inputs in TEMPLATES for arguments in inputs]

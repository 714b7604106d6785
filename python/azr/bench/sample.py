"""A small shipped workload of AZR-style programs (a function `f` and inputs for it), used by the
benchmark and the demo when the offline seed data is not available."""

from __future__ import annotations

from textwrap import dedent

TEMPLATES: list[tuple[str, list[str]]] = [
    (
        dedent("""\
        def f(words):
            counts = {}
            for w in words:
                counts[w] = counts.get(w, 0) + 1
            return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        """),
        [
            "['a', 'b', 'a']",
            "['x']",
            "[]",
            "['q', 'q', 'r', 'r', 'r']",
            "list('mississippi')",
            "['b', 'a'] * 3",
        ],
    ),
    (
        dedent("""\
        def f(s):
            out = []
            for i, ch in enumerate(s):
                out.append(ch.upper() if i % 2 else ch.lower())
            return ''.join(out)
        """),
        [
            "'Hello'",
            "'absolute zero'",
            "''",
            "'ABC123'",
            "'x'",
            "'MiXeD cAsE'",
        ],
    ),
    (
        dedent("""\
        from collections import deque
        def f(grid, start):
            rows, cols = len(grid), len(grid[0])
            seen = {start}
            queue = deque([(start, 0)])
            while queue:
                (r, c), d = queue.popleft()
                if grid[r][c] == 'E':
                    return d
                for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    nr, nc = r + dr, c + dc
                    if 0 <= nr < rows and 0 <= nc < cols and grid[nr][nc] != '#' and (nr, nc) not in seen:
                        seen.add((nr, nc))
                        queue.append(((nr, nc), d + 1))
            return -1
        """),
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
        dedent("""\
        import math
        def f(a, b):
            g = math.gcd(a, b)
            return g, a * b // g
        """),
        [
            "12, 18",
            "7, 5",
            "100, 75",
            "1, 1",
            "36, 48",
            "2**20, 6**8",
        ],
    ),
    (
        dedent("""\
        def f(n):
            memo = {0: 0, 1: 1}
            def fib(k):
                if k not in memo:
                    memo[k] = fib(k - 1) + fib(k - 2)
                return memo[k]
            return fib(n)
        """),
        [
            "10",
            "30",
            "1",
            "0",
            "75",
            "90",
        ],
    ),
    (
        dedent("""\
        def f(nums, target):
            seen = {}
            for i, x in enumerate(nums):
                if target - x in seen:
                    return seen[target - x], i
                seen[x] = i
            return None
        """),
        [
            "[2, 7, 11, 15], 9",
            "[3, 2, 4], 6",
            "[1, 2, 3], 7",
            "[0, 0], 0",
            "list(range(20)), 37",
            "[], 1",
        ],
    ),
    (
        dedent("""\
        def f(matrix):
            return [list(row) for row in zip(*matrix)]
        """),
        [
            "[[1, 2], [3, 4]]",
            "[[1, 2, 3]]",
            "[[1], [2], [3]]",
            "[]",
            "[[0] * 3 for _ in range(3)]",
            "[['a', 'b']]",
        ],
    ),
    (
        dedent("""\
        def f(s):
            out, i = [], 0
            while i < len(s):
                j = i
                while j < len(s) and s[j] == s[i]:
                    j += 1
                out.append(s[i] + (str(j - i) if j - i > 1 else ''))
                i = j
            return ''.join(out)
        """),
        [
            "'aaabccdddd'",
            "'abc'",
            "''",
            "'zzzzzz'",
            "'mississippi'",
            "'1112223'",
        ],
    ),
    (
        dedent("""\
        import heapq
        def f(xs, k):
            return heapq.nsmallest(k, xs), heapq.nlargest(1, xs)
        """),
        [
            "[5, 1, 4, 2, 3], 2",
            "[9], 1",
            "list(range(100, 0, -3)), 4",
            "[7, 7, 7], 2",
            "[-1, -5, 3], 3",
            "[0.5, 0.25], 1",
        ],
    ),
    (
        dedent("""\
        import re
        def f(s):
            return [int(x) for x in re.findall(r'-?\\d+', s)]
        """),
        [
            "'a1b22c-3'",
            "'no digits'",
            "'100 apples, 20 pears'",
            "'-1-2-3'",
            "'x=42;y=-7'",
            "'v3.12.0'",
        ],
    ),
    (
        dedent("""\
        def f(n):
            sieve = [True] * (n + 1)
            sieve[0:2] = [False, False][: n + 1]
            for i in range(2, int(n ** 0.5) + 1):
                if sieve[i]:
                    for j in range(i * i, n + 1, i):
                        sieve[j] = False
            primes = [i for i, p in enumerate(sieve) if p]
            return len(primes), primes[-3:]
        """),
        [
            "30",
            "100",
            "2",
            "1000",
            "50",
            "7",
        ],
    ),
    (
        dedent("""\
        from itertools import permutations
        def f(s):
            return sorted({''.join(p) for p in permutations(s)})[:5]
        """),
        [
            "'abc'",
            "'aab'",
            "'abcd'",
            "'x'",
            "'zzy'",
            "'1234'",
        ],
    ),
    (
        dedent("""\
        class Stack:
            def __init__(self):
                self.items = []
            def push(self, x):
                self.items.append(x)
            def pop(self):
                return self.items.pop() if self.items else None
        def f(ops):
            s, out = Stack(), []
            for op in ops:
                if op == 'pop':
                    out.append(s.pop())
                else:
                    s.push(op)
            return out, s.items
        """),
        [
            "['a', 'b', 'pop', 'c', 'pop', 'pop', 'pop']",
            "[]",
            "['pop']",
            "['x', 'y']",
            "['1', 'pop', '2']",
            "['q'] * 4",
        ],
    ),
    (
        dedent("""\
        def f(base):
            def make(k):
                return lambda x: x * k + base
            return [g(3) for g in map(make, range(4))]
        """),
        [
            "0",
            "1",
            "-2",
            "10",
            "7",
            "99",
        ],
    ),
    (
        dedent("""\
        def f(n):
            return bin(n).count('1'), n > 0 and n & (n - 1) == 0, n ^ (n >> 1)
        """),
        [
            "0",
            "1",
            "7",
            "8",
            "255",
            "12345",
        ],
    ),
    (
        dedent("""\
        from typing import List
        def f(intervals: List[List[int]]) -> List[List[int]]:
            merged = []
            for start, end in sorted(intervals):
                if merged and start <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            return merged
        """),
        [
            "[[1, 3], [2, 6], [8, 10]]",
            "[[1, 4], [4, 5]]",
            "[]",
            "[[5, 6], [1, 2]]",
            "[[1, 10], [2, 3]]",
            "[[0, 0]]",
        ],
    ),
    (
        dedent("""\
        def f(text):
            vowels = set('aeiou')
            words = text.split()
            return {w: sum(ch in vowels for ch in w.lower()) for w in words}
        """),
        [
            "'absolute zero reasoner'",
            "''",
            "'AEIOU xyz'",
            "'one two three'",
            "'rhythm'",
            "'a e i'",
        ],
    ),
    (
        dedent("""\
        import bisect
        def f(xs):
            tails = []
            for x in xs:
                i = bisect.bisect_left(tails, x)
                if i == len(tails):
                    tails.append(x)
                else:
                    tails[i] = x
            return len(tails)
        """),
        [
            "[10, 9, 2, 5, 3, 7, 101, 18]",
            "[0, 1, 0, 3, 2, 3]",
            "[7, 7, 7]",
            "[]",
            "list(range(30))",
            "[3, 10, 2, 1, 20]",
        ],
    ),
    (
        dedent("""\
        def f(n):
            total = 0
            while n:
                total += n % 10
                n //= 10
            return total if total < 10 else f(total)
        """),
        [
            "0",
            "9",
            "38",
            "12345",
            "99999999",
            "10**18 + 7",
        ],
    ),
    (
        dedent("""\
        from functools import reduce
        def f(xs):
            return reduce(lambda acc, x: acc * 31 + x, xs, 7) % 1000003
        """),
        [
            "[1, 2, 3]",
            "[]",
            "list(range(50))",
            "[10**9]",
            "[5] * 10",
            "[-1, 1]",
        ],
    ),
]


def sample_programs() -> list[tuple[str, str]]:
    """(program, input) pairs: every template with every one of its inputs."""
    return [(program.rstrip("\n"), arguments) for program, inputs in TEMPLATES for arguments in inputs]

"""Graph helpers for flows: the nodes' transitions as edges, what is reachable, cycles (Tarjan's strongly
connected components, iterative) and shortest paths for messages ("a → b → a")."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any


def edges(nodes: Mapping[str, Any]) -> dict[str, list[str]]:
    return {name: list(dict.fromkeys(t for _, t in node.transitions() if t in nodes)) for name, node in nodes.items()}


def reachable(edges: Mapping[str, list[str]], start: Iterable[str]) -> set[str]:
    seen = set(start)
    queue = deque(seen)
    while queue:
        for target in edges.get(queue.popleft(), []):
            if target not in seen:
                seen.add(target)
                queue.append(target)
    return seen


def cycles(edges: Mapping[str, list[str]], members: Sequence[str]) -> list[list[str]]:
    """Strongly connected components of the subgraph ``members`` that contain a cycle, in ``members`` order."""
    allowed = set(members)
    order = {name: index for index, name in enumerate(members)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    for root in members:  # iterative Tarjan
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(edges.get(root, [])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            name, targets = work[-1]
            for target in targets:
                if target not in allowed:
                    continue
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(edges.get(target, []))))
                    break
                if target in on_stack:
                    low[name] = min(low[name], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[name])
                if low[name] == index[name]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == name:
                            break
                    if len(component) > 1 or name in edges.get(name, []):
                        found.append(sorted(component, key=order.__getitem__))
    return sorted(found, key=lambda component: order[component[0]])


def cycle_path(edges: Mapping[str, list[str]], component: Sequence[str]) -> list[str]:
    """A shortest cycle through the component's first node: [a, b, a] (not a → a when there is more)."""
    first, allowed = component[0], set(component)
    parents: dict[str, str] = {}
    queue = deque([first])
    while queue:
        name = queue.popleft()
        for target in edges.get(name, []):
            if target == first and (name != first or len(component) == 1):
                path = [name]
                while path[-1] != first:
                    path.append(parents[path[-1]])
                return [*reversed(path), first]
            if target in allowed and target not in parents:
                parents[target] = name
                queue.append(target)
    return [first, first]



def shortest_path(graph: Mapping[str, frozenset[str]], start: str, goal: str) -> list[str] | None:
    """A shortest path start → ... → goal through the graph, or None."""
    parents: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        name = queue.popleft()
        if name == goal:
            path = [name]
            while (parent := parents[path[-1]]) is not None:
                path.append(parent)
            return list(reversed(path))
        for target in sorted(graph.get(name, ())):
            if target not in parents:
                parents[target] = name
                queue.append(target)
    return None

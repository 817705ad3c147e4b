"""Check Python code's calls into AITER against AITER's source, read with `ast` (AITER is never imported).

For every name a module imports from `aiter...` (at any depth, lazy imports included) the checker
finds the definition in the AITER source and checks each use:
- the function, class or name exists at that module path (package __init__ star imports followed);
- a call passes no more positional arguments than the function takes, only keywords it has, every
  required parameter, and no `*args` / `**kwargs` unpacking (which hides the order);
- a positional argument that is a variable named like ANOTHER parameter of the function is flagged
  (the MLA metadata buffers passed in the info function's order looked exactly like that);
- methods and attributes of an AITER class are checked on variables whose type is known: assigned
  from the class, or from a function annotated to return it (`-> "CustomAllreduce"`);
- `Enum.member` uses of AITER enums that are built in C++ are checked against AITER's own uses.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ClassInfo:
    name: str
    methods: dict[str, ast.FunctionDef]
    attributes: set[str]


@dataclass
class ModuleInfo:
    path: Path
    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)
    classes: dict[str, ClassInfo] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)  # other module-level bindings (assignments, imports)
    star_imports: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def _class_info(node: ast.ClassDef) -> ClassInfo:
    methods = {n.name: n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    attributes = set(methods)
    for item in node.body:
        for target in getattr(item, "targets", [getattr(item, "target", None)]):
            if isinstance(target, ast.Name):
                attributes.add(target.id)
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store) and isinstance(sub.value, ast.Name) \
                and sub.value.id == "self":
            attributes.add(sub.attr)
    return ClassInfo(node.name, methods, attributes)


class AiterSource:
    """AITER's Python modules under `root` (a checkout: root/aiter/...), parsed on demand."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._modules: dict[str, ModuleInfo | None] = {}
        self._text: str | None = None

    def module(self, dotted: str) -> ModuleInfo | None:
        if dotted not in self._modules:
            base = self.root.joinpath(*dotted.split("."))
            path = next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.exists()), None)
            self._modules[dotted] = self._parse(path, dotted) if path else None
        return self._modules[dotted]

    @staticmethod
    def _parse(path: Path, dotted: str) -> ModuleInfo:
        info = ModuleInfo(path)
        package = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                info.functions[node.name] = node
            elif isinstance(node, ast.ClassDef):
                info.classes[node.name] = _class_info(node)
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(node, package)
                for alias in node.names:
                    if alias.name == "*":
                        info.star_imports.append(source)
                    else:
                        info.names.add(alias.asname or alias.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in getattr(node, "targets", [getattr(node, "target", None)]):
                    if isinstance(target, ast.Name):
                        info.names.add(target.id)
        return info

    def resolve(self, dotted: str, name: str, seen: frozenset = frozenset()):
        """('function', def) | ('class', ClassInfo) | ('name', None) | ('module', dotted) | None."""
        module = self.module(dotted)
        if module is None or dotted in seen:
            return None
        if name in module.functions:
            return "function", module.functions[name]
        if name in module.classes:
            return "class", module.classes[name]
        if self.module(f"{dotted}.{name}") is not None:
            return "module", f"{dotted}.{name}"
        if name in module.names:
            return "name", None
        for star in module.star_imports:
            found = self.resolve(star, name, seen | {dotted})
            if found:
                return found
        return None

    def find_anywhere(self, name: str):
        """The one function or class named `name` anywhere in AITER (for names a checkout's
        package __init__ would re-export but this source lacks), or None."""
        found = []
        for path in sorted((self.root / "aiter").rglob("*.py")):
            dotted = ".".join(path.relative_to(self.root).with_suffix("").parts).removesuffix(".__init__")
            hit = self.resolve(dotted, name)
            if hit and hit[0] in ("function", "class"):
                found.append((dotted, hit))
        return found[0] if len(found) == 1 else None

    def text(self) -> str:
        if self._text is None:
            self._text = "\n".join(p.read_text(errors="replace") for p in sorted((self.root / "aiter").rglob("*.py")))
        return self._text


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[:len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def parameters(fn: ast.FunctionDef, is_method: bool = False) -> dict:
    """The parts of a signature a call is checked against."""
    a = fn.args
    positional = [p.arg for p in a.posonlyargs + a.args]
    if is_method and positional:
        positional = positional[1:]
    with_default = set(positional[len(positional) - len(a.defaults):]) if a.defaults else set()
    kwonly = [p.arg for p in a.kwonlyargs]
    with_default |= {p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None}
    return {"positional": positional, "posonly": {p.arg for p in a.posonlyargs}, "kwonly": kwonly,
            "required": [p for p in positional + kwonly if p not in with_default],
            "varargs": a.vararg is not None, "varkw": a.kwarg is not None}


def check_call(call: ast.Call, fn: ast.FunctionDef, what: str, is_method: bool = False) -> list[str]:
    sig = parameters(fn, is_method)
    problems = []
    if any(isinstance(arg, ast.Starred) for arg in call.args) or any(k.arg is None for k in call.keywords):
        problems.append(f"{what}: *args/**kwargs unpacking hides which parameter gets what: pass by keyword")
    positional = [arg for arg in call.args if not isinstance(arg, ast.Starred)]
    if len(positional) > len(sig["positional"]) and not sig["varargs"]:
        problems.append(f"{what}: {len(positional)} positional arguments, it takes {len(sig['positional'])}")
    given = set(sig["positional"][:len(positional)])
    names = set(sig["positional"]) | set(sig["kwonly"])
    for index, arg in enumerate(positional[:len(sig["positional"])]):
        slot = sig["positional"][index]
        if isinstance(arg, ast.Name) and arg.id in names and arg.id != slot:
            problems.append(f"{what}: `{arg.id}` is passed in the position of parameter `{slot}`")
    for keyword in call.keywords:
        if keyword.arg is None:
            continue
        if keyword.arg in given:
            problems.append(f"{what}: `{keyword.arg}` is given twice")
        elif (keyword.arg not in names or keyword.arg in sig["posonly"]) and not sig["varkw"]:
            problems.append(f"{what}: no parameter `{keyword.arg}`")
        given.add(keyword.arg)
    if not any(isinstance(arg, ast.Starred) for arg in call.args) and not any(k.arg is None for k in call.keywords):
        missing = [p for p in sig["required"] if p not in given]
        if missing:
            problems.append(f"{what}: required {', '.join(missing)} not passed")
    return problems


class _Usage(ast.NodeVisitor):
    """One module's uses of AITER: bindings, known-typed variables, calls and attribute reads."""

    def __init__(self, source: AiterSource, file: str):
        self.source, self.file = source, file
        self.bindings: dict[str, tuple[str, str | None]] = {}  # local name -> (aiter module, name | None)
        self.returns: dict[str, str] = {}  # function name -> AITER class name it is annotated to return
        self.types: dict[str, str] = {}  # variable name -> AITER class name
        self.findings: list[Finding] = []

    def note(self, node: ast.AST, message: str) -> None:
        self.findings.append(Finding(self.file, getattr(node, "lineno", 0), message))

    def prepare(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "aiter":
                for alias in node.names:
                    self.bindings[alias.asname or alias.name] = (node.module, alias.name)
                    if self.source.resolve(node.module, alias.name) is None:
                        elsewhere = self.source.find_anywhere(alias.name)
                        hint = f" (it is defined in {elsewhere[0]}: import it from there)" if elsewhere else ""
                        self.note(node, f"{node.module} has no `{alias.name}` in the AITER source{hint}")
                        if elsewhere:  # still check its uses against that definition
                            self.bindings[alias.asname or alias.name] = (elsewhere[0], alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "aiter":
                        self.bindings[alias.asname or alias.name.split(".")[0]] = (alias.name if alias.asname else "aiter", None)
                        if self.source.module(alias.name) is None:
                            self.note(node, f"AITER has no module {alias.name}")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
                returned = node.returns.value if isinstance(node.returns, ast.Constant) else getattr(node.returns, "id", None)
                if self._aiter_class(returned):
                    self.returns[node.name] = returned
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                produced = self._produces(node.value.func)
                for target in node.targets:
                    if produced and isinstance(target, ast.Name):
                        self.types[target.id] = produced

    def _aiter_class(self, name) -> ClassInfo | None:
        if not isinstance(name, str) or name not in self.bindings or self.bindings[name][1] is None:
            return None
        found = self.source.resolve(*self.bindings[name])
        return found[1] if found and found[0] == "class" else None

    def _produces(self, func: ast.AST) -> str | None:
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if self._aiter_class(name):
            return name
        return self.returns.get(name)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in self.bindings and self.bindings[func.id][1] is not None:
            module, name = self.bindings[func.id]
            self._check(node, self.source.resolve(module, name), f"{module}.{name}")
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            owner = func.value.id
            if owner in self.bindings and self.bindings[owner][1] is None:
                module = self.bindings[owner][0]
                found = self.source.resolve(module, func.attr)
                if found is None:
                    self.note(node, f"AITER has no {module}.{func.attr}")
                self._check(node, found, f"{module}.{func.attr}")
            elif owner in self.types:
                info = self._aiter_class(self.types[owner])
                if func.attr in info.methods:
                    for problem in check_call(node, info.methods[func.attr], f"{info.name}.{func.attr}", True):
                        self.note(node, problem)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name):
            owner = node.value.id
            if owner in self.types:
                info = self._aiter_class(self.types[owner])
                if node.attr not in info.attributes:
                    self.note(node, f"AITER's {info.name} has no attribute or method `{node.attr}`")
            elif owner in self.bindings and self.bindings[owner][1] is not None:
                found = self.source.resolve(*self.bindings[owner])
                if found and found[0] == "name" and f"{self.bindings[owner][1]}.{node.attr}" not in self.source.text():
                    self.note(node, f"AITER never uses {self.bindings[owner][1]}.{node.attr}")
                elif found and found[0] == "class" and node.attr not in found[1].attributes:
                    self.note(node, f"AITER's {found[1].name} has no `{node.attr}`")
        self.generic_visit(node)

    def _check(self, node: ast.Call, found, what: str) -> None:
        if found is None:
            return
        kind, definition = found
        if kind == "function":
            for problem in check_call(node, definition, what):
                self.note(node, problem)
        elif kind == "class" and "__init__" in definition.methods:
            for problem in check_call(node, definition.methods["__init__"], what, True):
                self.note(node, problem)


def check_source(text: str, source: AiterSource, file: str = "<string>") -> list[Finding]:
    tree = ast.parse(text)
    usage = _Usage(source, file)
    usage.prepare(tree)
    usage.visit(tree)
    return usage.findings


def check_tree(package_dir: Path, source: AiterSource) -> tuple[list[Finding], int]:
    """Findings over every .py file under package_dir, and how many files use AITER at all."""
    findings, users = [], 0
    for path in sorted(Path(package_dir).rglob("*.py")):
        text = path.read_text()
        if "aiter" not in text:
            continue
        found = check_source(text, source, str(path.relative_to(package_dir.parent)))
        users += any(isinstance(n, (ast.Import, ast.ImportFrom)) and "aiter" in ast.dump(n) for n in ast.walk(ast.parse(text)))
        findings += found
    return findings, users


def signature_text(fn: ast.FunctionDef) -> list[tuple[str, str, str | None]]:
    """(kind, name, default source) per parameter: what a stand-in must share with AITER."""
    a = fn.args
    out = []
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    for p, d in zip(positional, defaults):
        out.append(("posonly" if p in a.posonlyargs else "positional", p.arg, ast.unparse(d) if d else None))
    if a.vararg:
        out.append(("varargs", a.vararg.arg, None))
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        out.append(("kwonly", p.arg, ast.unparse(d) if d else None))
    if a.kwarg:
        out.append(("varkw", a.kwarg.arg, None))
    return out

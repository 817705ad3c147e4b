"""tests/kernel_digest.py keeps what the GPU runs and drops what only names the source (paths, lines, comments,
PTX's debug-scope labels)."""

from tests.kernel_digest import code_of

AMDGCN = """\t.text
\t.file\t1 "{path}" "mla_decode.py"
_kernel:
\t.loc\t1 {line} 5 ; mla_decode.py:{line}:5
\tv_add_f32_e32 v1, v2, v3 ; comment
\t{instruction}
\t.section\t.debug_str,"MS",@progbits,1
\t.asciz\t"{path}" ; string offset=20
\t.amdgpu_metadata
\t.vgpr_count: 64
\t.end_amdgpu_metadata
"""

PTX = """.visible .entry _kernel(
.file\t1 "{path}/mla_decode.py"
\t.loc\t1 {line} 5  // mla_decode.py:{line}
$L__tmp{line}:
\tadd.s32 \t%r1, %r2, %r3;
\t{instruction}
\t.section\t.debug_str
\t{{
$L__info_string0:
.b8 47,{line}
\t}}
"""


def test_source_paths_and_lines_do_not_count_but_instructions_do():
    for text, comment, instruction, other in ((AMDGCN, ";", "s_endpgm", "s_nop 0"), (PTX, "//", "ret;", "trap;")):
        before = code_of(text.format(path="/tmp/a", line=10, instruction=instruction), comment)
        moved = code_of(text.format(path="/work/main/b", line=250, instruction=instruction), comment)
        changed = code_of(text.format(path="/tmp/a", line=10, instruction=other), comment)
        assert before == moved and before != changed
        assert ".vgpr_count: 64" in before or "add.s32" in before  # the metadata and code stay

"""Preloaded by the rank fork server alone: the fork server dies with the rocbench process that started it.

A rank asks to die with its parent (ranks.die_with_parent), but a rank's parent is the fork server, which a
SIGKILL of rocbench used to leave running, holding its ranks (and on a GPU their device contexts). With the fork
server tied to rocbench the chain holds: rocbench dies, the fork server gets SIGKILL, its ranks get SIGKILL.
"""
from rocbench.core.harness.ranks import die_with_parent

die_with_parent()

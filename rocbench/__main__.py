from rocbench.cli import main

main()

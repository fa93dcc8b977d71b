from fbn_prune.cli.main import main

main()

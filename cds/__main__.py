from cds.cli import main

main()

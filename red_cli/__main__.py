from red_cli.cli import main

main()

from services.planner.service import main

main()
